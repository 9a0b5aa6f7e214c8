#!/usr/bin/env bash
# A checkpoint is never ahead of metrics.jsonl: coat-train is frozen (SIGSTOP) the moment its checkpoint of step
# 3 is complete, and metrics.jsonl must already hold step 3's record (a resume continues after step 3 and never
# logs it again: found by scripts/chaos.sh, where a kill -9 there lost the record of a synchronous save's step).
# Then kill -9 and --resume auto: every step 1..6 is logged. checkpoint.async false and true.
# Usage: check_kill_after_save.sh <coat-train> <config>
set -u
program=$1; config=$2
work=$(mktemp -d)
job=""
trap '[ -n "$job" ] && kill -9 "$job" 2>/dev/null; rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; for f in "$work"/*.log; do echo "--- $f"; tail -n 8 "$f"; done; exit 1; }
perl -e 'print pack("v*", map { ($_ * 7 + int($_ / 5)) % 64 } 0 .. 5999)' > "$work/tokens.bin"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
command_for() {  # command_for <async> [args...]: the command line, in the array cmd
  local async=$1; shift
  cmd=("$program" --config "$config" --set data.path=\""$work/tokens.bin"\" --set data.format=\"u16\"
       --set train.micro_batch_size=1 --set train.global_batch_size=6 --set train.max_steps=6
       --set train.eval_interval=0 --set checkpoint.interval=3 --set checkpoint.async="$async"
       --set logging.progress=\"off\" --set logging.run_dir=\""$work/run_$async"\" "$@")
}
steps_of() { grep -E '"loss":' "$1" | grep -oE '"step":[0-9]+' | grep -oE '[0-9]+' | sort -nu | tr '\n' ' '; }
for async in false true; do
  run=$work/run_$async
  command_for "$async"
  "${cmd[@]}" > "$work/first_$async.log" 2>&1 &  # not in a subshell: $! is coat-train's pid
  job=$!
  while [ ! -d "$run/checkpoints/step_00000003" ] && kill -0 "$job" 2>/dev/null; do :; done  # no sleep: a tight look
  kill -STOP "$job" 2>/dev/null || fail "async $async: the run ended before its checkpoint of step 3 was seen"
  [ -f "$run/checkpoints/step_00000003/COMPLETE" ] || fail "async $async: step_00000003 without COMPLETE"
  grep -q '"loss":.*"step":3,' "$run/metrics.jsonl" ||
    fail "async $async: the checkpoint of step 3 is complete but metrics.jsonl has no record of step 3"
  kill -9 "$job"; wait "$job" 2>/dev/null; job=""
  command_for "$async" --resume auto
  "${cmd[@]}" > "$work/resumed_$async.log" 2>&1 || fail "async $async: the resumed run failed"
  grep -q "resumed from .*step_0000000[3-6]" "$work/resumed_$async.log" || fail "async $async: did not resume"
  [ "$(steps_of "$run/metrics.jsonl")" == "1 2 3 4 5 6 " ] ||
    fail "async $async: metrics.jsonl logs steps $(steps_of "$run/metrics.jsonl"), not 1-6"
  echo "async $async: step 3's record was written before its checkpoint was complete; steps 1-6 logged"
done
echo "PASS"
