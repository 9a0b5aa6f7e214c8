#!/usr/bin/env bash
# Graceful stop of coat-train, on one rank or under mpirun: SIGUSR1 (to rank 0 only) saves a checkpoint and
# training goes on; then SIGTERM to rank 0 only (`rank0`: the other ranks learn it in the step's agreement) or
# SIGUSR2 to mpirun (`mpirun`: forwarded to every rank) ends every rank after the same step with a checkpoint
# of it, its metrics written and exit status 75; --resume auto then continues, and the losses of every step
# equal an uninterrupted run's.
# Usage: check_graceful_stop.sh <coat-train> <config> <ranks> rank0|mpirun [<mpiexec> <np flag> [flags...]]
set -u
program=$1; config=$2; ranks=$3; stop_via=$4; shift 4
launcher=()
if ((ranks > 1)); then mpiexec=$1; np_flag=$2; shift 2; launcher=("$mpiexec" "$@" "$np_flag" "$ranks"); fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; for f in "$work"/*.log; do echo "--- $f"; tail -n 15 "$f"; done; exit 1; }
perl -e 'print pack("v*", map { ($_ * 7 + int($_ / 5)) % 64 } 0 .. 5999)' > "$work/tokens.bin"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
command_for() {  # command_for <run dir> <max steps> [more args...]: the command line, in the array cmd
  local run=$1 steps=$2; shift 2
  cmd=("${launcher[@]}" "$program" --config "$config" --set data.path=\""$work/tokens.bin"\" --set data.format=\"u16\"
       --set optim.schedule=\"constant\" --set train.micro_batch_size=1 --set train.global_batch_size=6
       --set checkpoint.interval=0 --set checkpoint.keep_last=0 --set train.eval_interval=0
       --set logging.progress=\"off\" --set train.max_steps="$steps" --set logging.run_dir=\""$work/$run"\" "$@")
}
train() { command_for "$@"; "${cmd[@]}"; }
lines() { [ -f "$1" ] && wc -l < "$1" || echo 0; }
# The pid of rank 0: the job itself without mpirun, else the child of this job's mpirun that is rank 0 (never
# a process of another test running beside this one).
rank0_pid() {
  if ((ranks == 1)); then echo "$job"; return; fi
  for pid in $(pgrep -P "$job"); do
    if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=0"; then
      echo "$pid"; return
    fi
  done
}
wait_for_steps() {  # wait_for_steps <metrics file> <lines>
  for _ in $(seq 1 600); do (( $(lines "$1") >= $2 )) && return 0; sleep 0.1; done
  return 1
}
steps_of() { grep -E '"loss":' "$1" | grep -oE '"step":[0-9]+' | grep -oE '[0-9]+' | tr '\n' ' '; }
losses_of() { grep -E '"loss":' "$1" | grep -oE '"loss":[^,}]+' | tr '\n' ' '; }

# 1. SIGUSR1 (to rank 0 only), then SIGTERM (to rank 0 only), or SIGUSR2 to mpirun.
command_for stopped 1000000
"${cmd[@]}" > "$work/stopped.log" 2>&1 &  # not in a subshell: $! is mpirun's (or coat-train's) pid
job=$!
trap 'kill -9 "$job" 2>/dev/null; rm -rf "$work"' EXIT
wait_for_steps "$work/stopped/metrics.jsonl" 3 || fail "training did not start"
victim=$(rank0_pid)
[ -n "$victim" ] || fail "rank 0 not found"
kill -USR1 "$victim"
saved=$(lines "$work/stopped/metrics.jsonl")
wait_for_steps "$work/stopped/metrics.jsonl" $((saved + 3)) || fail "training did not go on after SIGUSR1"
if [ "$stop_via" == mpirun ]; then kill -USR2 "$job"; else kill -TERM "$victim"; fi
for _ in $(seq 1 600); do kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
kill -0 "$job" 2>/dev/null && fail "still running 60 s after the stop signal"
wait "$job"
status=$?
[ "$status" -eq 75 ] || fail "exit status $status after the stop signal, expected 75"
grep -q "saved a checkpoint of step [0-9]* as asked" "$work/stopped.log" || fail "no checkpoint on SIGUSR1"
last=$(steps_of "$work/stopped/metrics.jsonl" | awk '{print $NF}')
expected=$(seq -s ' ' 1 "$last")
[ "$(steps_of "$work/stopped/metrics.jsonl")" == "$expected " ] || fail "metrics.jsonl holds steps $(steps_of "$work/stopped/metrics.jsonl"), expected 1-$last once each"
grep -q "stopped after step $last " "$work/stopped.log" || fail "no 'stopped after step $last' message"
complete=$(ls "$work/stopped/checkpoints")
[ -f "$work/stopped/checkpoints/$(printf 'step_%08d' "$last")/COMPLETE" ] || fail "no complete checkpoint of step $last (have: $complete)"
(( $(echo "$complete" | wc -l) == 2 )) || fail "expected the SIGUSR1 checkpoint and the stop's, have: $complete"
echo "stopped after step $last with exit status 75; checkpoints: $(echo $complete)"

# 2. --resume auto continues to step last + 4; the losses equal an uninterrupted run's.
final=$((last + 4))
train stopped "$final" --resume auto > "$work/resumed.log" 2>&1 || fail "the resumed run failed"
train straight "$final" > "$work/straight.log" 2>&1 || fail "the uninterrupted run failed"
[ "$(steps_of "$work/stopped/metrics.jsonl" | tr ' ' '\n' | grep -c .)" -eq "$final" ] || fail "resumed metrics do not hold steps 1-$final"
a=$(losses_of "$work/stopped/metrics.jsonl")
b=$(losses_of "$work/straight/metrics.jsonl")
[ "$a" == "$b" ] || fail "losses differ: stopped+resumed [$a] vs uninterrupted [$b]"
echo "resumed to step $final: the $final losses equal the uninterrupted run's"
echo "PASS"
