#!/usr/bin/env bash
# What coat-train does to its run directory when things go wrong, one case per call:
#   lock            a second coat-train on a live run's directory is refused with the holder's PID and host;
#                   after a kill -9 of the holder the kernel has released the lock (no stale lock)
#   second_signal   a second SIGTERM during a step stops at once (status 143) and says what is lost
#   rejected        a resume with a config for another model leaves config.json and metrics.jsonl as they
#                   were; a fresh run directory with a rejected checkpoint or data leaves nothing behind
#   ranks_write_failure  under mpirun -np 2: rank 0's failed metrics write stops both ranks after they saved a
#                   checkpoint together, each naming the cause (rank 0) or rank 0 (rank 1)
#   full_disk       metrics.jsonl on a full disk (a 1 MiB tmpfs in a private mount namespace; where mount is
#                   not permitted, metrics.jsonl as a link to /dev/full) stops the run naming the file and the
#                   OS error, after trying to save; the file keeps whole lines only
# Usage: check_run_dir.sh <coat-train> <config> <case> [<mpiexec> <np flag> [mpiexec flags...]]
set -u
program=$1; config=$2; case_name=$3; shift 3
launcher=()
if (($# >= 2)); then mpiexec=$1; np_flag=$2; shift 2; launcher=("$mpiexec" "$@" "$np_flag" 2); fi
work=$(mktemp -d)
jobs_started=()
cleanup() { for j in "${jobs_started[@]}"; do kill -9 "$j" 2>/dev/null; done; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$work"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 12 "$f"; }; done; exit 1; }
perl -e 'print pack("v*", map { ($_ * 7 + int($_ / 5)) % 64 } 0 .. 5999)' > "$work/tokens.bin"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
command_for() {  # command_for <run dir> <max steps> [more args...]: the command line, in the array cmd
  local run=$1 steps=$2; shift 2
  cmd=("${launcher[@]}" "$program" --config "$config" --set data.path=\""$work/tokens.bin"\" --set data.format=\"u16\"
       --set optim.schedule=\"constant\" --set checkpoint.interval=0 --set train.eval_interval=0
       --set logging.progress=\"off\" --set train.max_steps="$steps" --set logging.run_dir=\""$run"\" "$@")
}
train() { command_for "$@"; "${cmd[@]}"; }
start() {  # start <log> <run dir> <max steps> [args...]: in the background; its pid in $job
  local log=$1; shift
  command_for "$@"
  "${cmd[@]}" > "$log" 2>&1 &
  job=$!
  jobs_started+=("$job")
}
lines() { [ -f "$1" ] && wc -l < "$1" || echo 0; }
wait_for() {  # wait_for <command...>: up to 60 s
  for _ in $(seq 1 600); do "$@" && return 0; sleep 0.1; done
  return 1
}
has_steps() { (( $(lines "$1") >= $2 )); }
exited() { ! kill -0 "$1" 2>/dev/null; }

case $case_name in
lock)
  start "$work/holder.log" "$work/run" 1000000
  holder=$job
  wait_for has_steps "$work/run/metrics.jsonl" 2 || fail "training did not start"
  train "$work/run" 1000000 --resume auto > "$work/second.log" 2>&1 && fail "a second coat-train on a live run directory was accepted"
  grep -q "is in use: locked by pid $holder on host $(hostname)" "$work/second.log" ||
    fail "the refusal does not name the holder (pid $holder on host $(hostname)): $(tail -n 1 "$work/second.log")"
  before=$(lines "$work/run/metrics.jsonl")
  [ -z "$(grep -oE '"step":[0-9]+' "$work/run/metrics.jsonl" | sort | uniq -d)" ] || fail "metrics.jsonl has records of another writer"
  kill -9 "$holder"; wait "$holder" 2>/dev/null
  start "$work/after.log" "$work/run" 1000000 --resume auto
  after=$job
  wait_for has_steps "$work/run/metrics.jsonl" $((before + 2)) || fail "after kill -9 of the holder the lock was not free"
  kill -TERM "$after"
  wait_for exited "$after" || fail "still running 60 s after SIGTERM"
  echo "refused: $(grep -o 'is in use: locked by pid [0-9]* on host [^ ]*' "$work/second.log"); free after kill -9"
  ;;
second_signal)
  # Steps of a few hundred milliseconds, so that the second signal comes during one.
  start "$work/run.log" "$work/run" 1000000 --set model.hidden_size=256 --set model.intermediate_size=1024 \
    --set model.num_hidden_layers=4 --set data.seq_len=64 --set train.micro_batch_size=4 --set train.global_batch_size=8
  wait_for has_steps "$work/run/metrics.jsonl" 1 || fail "training did not start"
  kill -TERM "$job"
  wait_for grep -q "SIGTERM received" "$work/run.log" || fail "the first SIGTERM was not acknowledged"
  kill -TERM "$job"
  wait_for exited "$job" || fail "still running 60 s after a second SIGTERM"
  wait "$job"
  status=$?
  [ "$status" -eq 143 ] || fail "exit status $status after a second SIGTERM, expected 143 (killed by SIGTERM)"
  grep -q "second stop signal (SIGTERM): stopping at once, without saving; .*lost" "$work/run.log" ||
    fail "the second signal does not say what is lost"
  [ ! -d "$work/run/checkpoints" ] || [ -z "$(ls "$work/run/checkpoints" | grep -v '\.tmp$\|\.trash$')" ] ||
    fail "a checkpoint was written: $(ls "$work/run/checkpoints")"
  grep -o "second stop signal.*" "$work/run.log"
  ;;
rejected)
  train "$work/run" 4 > "$work/first.log" 2>&1 || fail "the first run failed"
  cp "$work/run/config.json" "$work/config.before"; cp "$work/run/metrics.jsonl" "$work/metrics.before"
  train "$work/run" 8 --resume auto --set model.hidden_size=48 > "$work/other_model.log" 2>&1 &&
    fail "a resume with another model was accepted"
  grep -q "was written for another model" "$work/other_model.log" || fail "no 'another model' error"
  cmp -s "$work/run/config.json" "$work/config.before" || fail "the rejected resume changed config.json"
  cmp -s "$work/run/metrics.jsonl" "$work/metrics.before" || fail "the rejected resume changed metrics.jsonl"
  # A fresh run directory: a rejected checkpoint, then rejected data, leave nothing; then a plain start runs.
  checkpoint=$(ls -d "$work"/run/checkpoints/step_* | tail -1)
  train "$work/fresh" 8 --resume "$checkpoint" --set model.hidden_size=48 > "$work/fresh1.log" 2>&1 &&
    fail "a checkpoint of another model was accepted"
  [ ! -e "$work/fresh" ] || fail "the rejected resume left $(ls -A "$work/fresh")"
  train "$work/fresh" 8 --set model.vocab_size=32 > "$work/fresh2.log" 2>&1 && fail "tokens past the vocabulary were accepted"
  grep -q "past the vocabulary" "$work/fresh2.log" || fail "no vocabulary error"
  [ ! -e "$work/fresh" ] || fail "the rejected data left $(ls -A "$work/fresh")"
  train "$work/fresh" 2 > "$work/fresh3.log" 2>&1 || fail "a plain start after the rejections failed"
  echo "config.json and metrics.jsonl unchanged by the rejected resume; nothing left by rejections in a fresh directory"
  ;;
ranks_write_failure)
  ((${#launcher[@]})) || fail "ranks_write_failure needs mpiexec"
  mkdir -p "$work/run"; ln -s /dev/full "$work/run/metrics.jsonl"
  train "$work/run" 10 --resume auto --set train.micro_batch_size=1 --set train.global_batch_size=2 > "$work/ranks.log" 2>&1 &&
    fail "the run went on although rank 0 could not write metrics.jsonl"
  grep -q "\[rank 0\] coat-train: error: cannot write metrics file '.*metrics.jsonl': No space left on device .*stopped after step 1; a checkpoint of step 1 was saved" "$work/ranks.log" ||
    fail "rank 0 does not name the file, the OS error and the saved checkpoint"
  grep -q "\[rank 1\] coat-train: error: rank 0 could not write metrics.jsonl" "$work/ranks.log" || fail "rank 1 does not point at rank 0"
  [ -f "$work/run/checkpoints/step_00000001/COMPLETE" ] || fail "no complete checkpoint of step 1"
  grep -o "\[rank [01]\] coat-train: error: .*" "$work/ranks.log"
  ;;
full_disk)
  disk="$work/disk"
  mkdir -p "$disk"
  run_and_check() {  # the run on a full disk: status 1, an error naming metrics.jsonl and the OS error
    "${cmd[@]}" > "$work/full.log" 2>&1 && fail "the run went on with a full disk"
    grep -q "cannot write metrics file '.*metrics.jsonl': No space left on device" "$work/full.log" ||
      fail "the error does not name metrics.jsonl and ENOSPC"
    grep -q "stopped after step [0-9]*; \(a checkpoint of step [0-9]* was saved\|saving a checkpoint of step [0-9]* failed too\)" "$work/full.log" ||
      fail "the error does not say what was saved"
  }
  mounted=""
  if command -v unshare >/dev/null && unshare -m true 2>/dev/null; then
    # A private mount namespace: the tmpfs goes away with the command. Room for the config and about 20
    # metrics records, not for a checkpoint.
    command_for "$disk/run" 1000
    if unshare -m bash -c 'mount -t tmpfs -o size=1m tmpfs "$0" && head -c 1000000 /dev/zero > "$0/filler" 2>/dev/null;
                           "${@:2}" > "$1/full.log" 2>&1; s=$?; cp -r "$0/run" "$1/run_copy" 2>/dev/null; exit $s' \
         "$disk" "$work" "${cmd[@]}"; then
      fail "the run went on with a full disk"
    elif grep -q "cannot write metrics file" "$work/full.log"; then
      mounted="a 1 MiB tmpfs"
      grep -q "No space left on device" "$work/full.log" || fail "the error does not name the OS error"
      grep -q "stopped after step [0-9]*; saving a checkpoint of step [0-9]* failed too" "$work/full.log" ||
        fail "the error does not say that saving was tried"
      metrics="$work/run_copy/metrics.jsonl"
    fi
  fi
  if [ -z "$mounted" ]; then
    mounted="metrics.jsonl linked to /dev/full (no tmpfs mount here)"
    mkdir -p "$disk/run"; ln -s /dev/full "$disk/run/metrics.jsonl"
    command_for "$disk/run" 6 --resume auto
    run_and_check
    metrics=/dev/null
  fi
  # Whole lines only: every line parses as one JSON record.
  if [ -f "$metrics" ]; then
    n=$(lines "$metrics")
    whole=$(grep -c '^{.*}$' "$metrics")
    [ "$n" -eq "$whole" ] && [ "$(tail -c 1 "$metrics" | od -An -c | tr -d ' ')" == '\n' ] ||
      fail "metrics.jsonl holds a partial line"
    echo "metrics.jsonl kept $n whole records"
  fi
  echo "full disk ($mounted): $(grep -o 'cannot write metrics file.*' "$work/full.log" | head -1)"
  ;;
*) fail "unknown case $case_name" ;;
esac
echo "PASS"
