#!/usr/bin/env bash
# Chaos campaign: coat-train runs on the CPU (one process, and 3 ranks under mpirun) killed with kill -9 at
# random and at chosen moments (mid-step, mid-save, mid-prune, writing config.json at the start, during the
# async saver's background write), stopped with SIGTERM at random moments, and run out of disk at random points
# of a save, each time continued with --resume auto until max_steps; then compared with an uninterrupted run of
# the same world size: every logged loss, gradient norm and validation loss, and the final checkpoint byte for
# byte. Counts the kills, the lost complete checkpoints, the differences and the leftover directories; prints a
# table and exits non-zero on any problem. Moments in scripts/chaos/jobs.sh, checks in scripts/chaos/checks.sh.
#   scripts/chaos.sh [--kills N] [--sigterms N] [--disk N] [--ranks "1 3"] [--async "false true"] [--seed S]
#                    [--steps N] [--keep-going] [--build DIR] [--work DIR]
# --kills: kill -9s of each kind (random, step, save, prune, start; bgwrite with async) per world size and async
# setting (default 2); --sigterms, --disk: per world size and async setting (default 2 and 1); --work keeps the
# run directories there (default: a temporary directory, removed unless a problem was found).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
kills=2 sigterms=2 disks=1 ranks_list="1 3" async_list="false true" seed=$((RANDOM * 32768 + RANDOM))
max_steps=24 keep_going=false build=${COAT_BUILD_DIR:-build} work=""
args=("$@")
while (($#)); do
  case $1 in
    --kills) kills=$2; shift 2 ;; --sigterms) sigterms=$2; shift 2 ;; --disk) disks=$2; shift 2 ;;
    --ranks) ranks_list=$2; shift 2 ;; --async) async_list=$2; shift 2 ;; --seed) seed=$2; shift 2 ;;
    --steps) max_steps=$2; shift 2 ;; --keep-going) keep_going=true; shift ;; --build) build=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    *) echo "chaos: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
# A private mount namespace, where allowed, for the full-disk runs' tmpfs (gone with the campaign).
if [ -z "${CHAOS_NAMESPACE:-}" ] && ((disks > 0)) && unshare -m true 2> /dev/null; then
  CHAOS_NAMESPACE=1 exec unshare -m bash "$0" "${args[@]}" --seed "$seed"
fi
program=$(realpath "$build/coat-train")
[ -x "$program" ] || { echo "chaos: no $build/coat-train (build it, or pass --build DIR)" >&2; exit 2; }
config=$PWD/configs/test_small.json
mpiexec=${MPIEXEC:-mpirun}
mpi_flags=()
"$mpiexec" --version 2> /dev/null | grep -q "Open MPI\|OpenRTE" && mpi_flags=(--allow-run-as-root --oversubscribe)
remove_work=false
if [ -z "$work" ]; then work=$(mktemp -d); remove_work=true; fi
mkdir -p "$work/logs"; work=$(realpath "$work")
RANDOM=$seed
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
# A learnable token stream; a model of 3.6 MiB of checkpoint, steps of tens of milliseconds.
perl -e 'print pack("v*", map { ($_ * 7 + int($_ / 5)) % 64 } 0 .. 29999)' > "$work/tokens.bin"
common=(--set data.path=\""$work/tokens.bin"\" --set data.format=\"u16\" --set data.seq_len=32
        --set model.hidden_size=128 --set model.intermediate_size=256 --set train.micro_batch_size=1
        --set train.global_batch_size=6 --set train.eval_interval=0 --set train.max_steps="$max_steps"
        --set logging.progress=\"off\")
interval=3 keep=2
source scripts/chaos/jobs.sh
source scripts/chaos/checks.sh

declare -A counts
bump() { counts["$ranks $async $1"]=$(( ${counts["$ranks $async $1"]:-0} + ${2:-1} )); }
count_of() { echo "${counts["$1 $2 $3"]:-0}"; }
summary() {
  local cols=(kills at_write at_staging at_prune at_start at_step sigterms stopped disks enospc runs values lost difference leftover failure missed)
  echo
  echo "chaos campaign: seed $seed, $max_steps steps, checkpoint every $interval (keep $keep), --kills $kills --sigterms $sigterms --disk $disks; full disk: $disk_method"
  printf '%-5s %-5s' ranks async; printf ' %10s' "${cols[@]}"; echo
  local r a c t
  declare -A total
  for r in $ranks_list; do for a in $async_list; do
    printf '%-5s %-5s' "$r" "$a"
    for c in "${cols[@]}"; do t=$(count_of "$r" "$a" "$c"); total[$c]=$(( ${total[$c]:-0} + t )); printf ' %10s' "$t"; done
    echo
  done; done
  printf '%-11s' all; for c in "${cols[@]}"; do printf ' %10s' "${total[$c]}"; done; echo
  echo "kills: kill -9 (at_*: what the run directory showed at the kill: a rank file being written, a staging"
  echo "directory, a checkpoint being pruned, config.json being written, none of these); stopped: SIGTERMs that"
  echo "ended with status 75 and a checkpoint; enospc: full-disk runs that failed; runs: runs finished and"
  echo "compared; values: logged values compared; lost: complete checkpoints lost or damaged; missed: events"
  echo "whose moment never came (3 tries)."
  problems=$(( ${total[lost]} + ${total[difference]} + ${total[leftover]} + ${total[failure]} ))
  echo "chaos: $problems problem(s); run directories in $work"
}

problem_count=0

# ---- one run: segments until max_steps ----

# event_note <kind> <victims> <moment> <status> <note>: a line of $work/events.txt.
event_note() {
  printf '%s ranks=%s async=%s %s seg%s %s victims=%s moment=%s status=%s %s\n' "$(date +%T.%3N)" "$ranks" \
    "$async" "$(basename "$log_base")" "$segment" "$1" "${2// /_}" "$3" "$4" "$5" >> "$work/events.txt"
}

new_run() {
  run_number=$((${run_number:-0} + 1))
  run_dir=$1/run$run_number; ck=$run_dir/checkpoints
  log_base=$work/logs/$(basename "$1")-run$run_number
  segment=0; expected_resume=0; events_in_run=0
}
segment_log() { echo "$log_base.seg$segment.log"; }
# start: the first segment of a run starts it, the later ones continue it with --resume auto.
start() {
  segment=$((segment + 1))
  segment_lines=$(metrics_lines)
  local log; log=$(segment_log)
  if ((segment == 1)); then start_segment "$run_dir" "$log"; else start_segment "$run_dir" "$log" --resume auto; fi
  current_log=$log
}
# A segment that ended by itself: finished (status 0), or a failure.
ended_by_itself() {
  ((segment > 1)) && check_resume_choice "$current_log"
  if ((status == 0)); then check_finished_run
  else problem failure "a segment ended with status $status: $(grep -m1 -o 'error: .*' "$current_log")"; fi
  run_dir=""
}
finish_run() {
  while [ -n "$run_dir" ]; do
    start; wait_job 120; ended_by_itself
  done
}

# kill_event <kind>: one kill -9 (or SIGTERM) in the current run; false when its moment did not come.
kill_event() {
  local kind=$1
  start
  if ! fire "$kind"; then
    wait_job 120; event_note "$kind" - - "$status" "its moment did not come"; ended_by_itself; return 1
  fi
  wait_job 60
  ((segment > 1)) && check_resume_choice "$current_log"
  if [ "$kind" == sigterm ]; then
    what=SIGTERM; bump sigterms
    if ((status == 75)); then
      local stopped; stopped=$(grep -o 'stopped after step [0-9]*' "$current_log" | head -n 1 | grep -o '[0-9]*$')
      [ -f "$ck/$(printf 'step_%08d' "${stopped:-0}")/COMPLETE" ] ||
        problem failure "exit status 75 without a complete checkpoint of the step it stopped after (${stopped:-?})"
      bump stopped
    elif ((status == 0)); then  # the signal came after the last step
      event_note "$kind" "$victim_names" "$struck_at" "$status" "after the last step"
      check_finished_run; run_dir=""; return 0
    elif (($(metrics_lines) > segment_lines)) && [ ! -f "$ck/$(printf 'step_%08d' "$max_steps")/COMPLETE" ]; then
      # (Before the handlers are installed, or after the run is complete, SIGTERM may end a rank outright.)
      problem failure "SIGTERM to $victim_names after training began: status $status, not 75"
    fi
  else
    what="kill -9 of $victim_names"; bump kills; bump "at_$struck_at"
    ((status == 124)) && problem failure "the job still ran 60 s after kill -9 of $victim_names"
  fi
  event_note "$kind" "$victim_names" "$struck_at" "$status" "$(($(now_ms) - struck_ms)) ms to end"
  check_interruption
  events_in_run=$((events_in_run + 1))
  return 0
}

# disk_event: a fresh run on a disk with little room left (a random amount below 2.5 checkpoints); it must
# fail naming ENOSPC and leave no staging or temporary files; then the room comes back and --resume auto
# continues to max_steps.
disk_event() {
  local disk=$work/disk room_kb problems_before=$problem_count
  new_run "$disk"
  bump disks
  room_kb=$(rand_below $((checkpoint_kb * 5 / 2)))
  if [ "$disk_method" == tmpfs ]; then
    mkdir -p "$disk"
    mount -t tmpfs -o size=$((checkpoint_kb * 6 + 4096))k tmpfs "$disk" || { echo "chaos: mount failed" >&2; exit 2; }
    fallocate -l $(( ($(df -k --output=avail "$disk" | tail -n 1) - room_kb) * 1024 )) "$disk/filler"
    start
  else
    room_kb=$(rand_below $((checkpoint_kb / ranks + 1)))  # a cap on each file: below a rank file's size
    CHAOS_FSIZE_KB=$room_kb start
  fi
  wait_job 120
  event_note disk - "room=${room_kb}KiB" "$status" "$(grep -m1 -o 'error: .\{0,160\}' "$current_log")"
  complete_before="" what="full disk"
  local missed=false
  if ((status == 0)); then
    missed=true; check_finished_run; run_dir=""
  else
    bump enospc
    grep -q "No space left on device\|File too large" "$current_log" ||
      problem failure "the run on a full disk ended with status $status without naming ENOSPC: $(grep -m1 -o 'error: .*' "$current_log")"
    check_leftovers "after the failure on a full disk"
    check_interruption
    rm -f "$disk/filler"
    finish_run
  fi
  if [ "$disk_method" == tmpfs ]; then
    ((problem_count > problems_before)) && cp -a "$disk/run$run_number" "$work/disk-run$run_number"  # for a look
    umount "$disk"
  fi
  ! $missed
}

campaign() {
  local kinds=(random step save prune start) events=() k i j t ev tries
  [ "$async" == true ] && kinds+=(bgwrite)
  for k in "${kinds[@]}"; do for ((i = 0; i < kills; i++)); do events+=("$k"); done; done
  for ((i = 0; i < sigterms; i++)); do events+=(sigterm); done
  for ((i = 0; i < disks; i++)); do events+=(disk); done
  for ((i = ${#events[@]} - 1; i > 0; i--)); do  # shuffled
    j=$(rand_below $((i + 1))); t=${events[i]}; events[i]=${events[j]}; events[j]=$t
  done
  run_dir=""
  for ev in "${events[@]}"; do
    for ((tries = 0; tries < 3; tries++)); do
      if [ "$ev" == disk ]; then
        finish_run; disk_event && break
      else
        [ -n "$run_dir" ] || new_run "$work/r${ranks}_async_$async"
        if kill_event "$ev"; then
          ((events_in_run >= 4)) && finish_run
          break
        fi
      fi
    done
    ((tries == 3)) && bump missed
  done
  finish_run
}

# ---- references, then the campaigns ----

disk_method="none"
if ((disks > 0)); then
  if [ -n "${CHAOS_NAMESPACE:-}" ]; then disk_method=tmpfs; else disk_method="ulimit -f (RLIMIT_FSIZE, SIGXFSZ ignored)"; fi
fi
echo "chaos: seed $seed, work directory $work"
# Bash's notices of the jobs it killed ("... Killed  coat-train ...") say nothing the counts do not.
exec 2> >(grep --line-buffered -v '^scripts/chaos/jobs.sh: line [0-9]*: *[0-9]* Killed ' >&2)
for ranks in $ranks_list; do
  async=false
  ref=$work/ref$ranks
  started=$(now_ms)
  (interval=1 keep=0; start_segment "$ref" "$ref.log"; wait_job 300; exit "$status") ||
    { echo "chaos: the reference run of $ranks rank(s) failed:"; tail -n 20 "$ref.log"; exit 1; }
  # The reference saves at every step: 3/4 of its step for a step of the campaign's runs.
  train_ms=$(perl -e 'print int($ARGV[0] * 750)' "$(grep -o '"time_s":[0-9.e-]*' "$ref/metrics.jsonl" | tail -n 1 | cut -d: -f2)")
  startup_ms=$(($(now_ms) - started - train_ms * 4 / 3))
  step_ms=$((train_ms / max_steps + 1))
  checkpoint_kb=$(du -sk "$ref/checkpoints/$(printf 'step_%08d' "$max_steps")" | cut -f1)
  echo "reference, $ranks rank(s): $(($(now_ms) - started)) ms, $step_ms ms a step, checkpoint $checkpoint_kb KiB"
  for async in $async_list; do
    echo "campaign: $ranks rank(s), checkpoint.async $async"
    campaign
  done
done
summary
if ((problems == 0)) && $remove_work; then rm -rf "$work"; fi
((problems == 0))
