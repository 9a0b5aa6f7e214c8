#!/usr/bin/env bash
# A rank killed with SIGKILL (an OOM kill, a node lost) must end the whole job, not leave the others waiting
# in a collective: trains under mpirun -np 3, kills rank 1 at a moment, and checks that mpirun exits non-zero
# within 60 s naming rank 1. The moments:
#   step     once training runs (no checkpoints)
#   save     while a synchronous save writes its checkpoint (a staging directory without COMPLETE)
#   bgwrite  while the async saver writes a checkpoint in the background and training went on (the saved
#            step's metrics record is written, its staging directory has no COMPLETE yet)
# For save and bgwrite every rank is frozen (SIGSTOP) first, so that the moment is checked before the kill; after
# the job ended, the checkpoint that was complete before the kill is still complete, and --resume auto takes
# the newest complete checkpoint, which verifies (every byte against its CRC).
# Usage: check_rank_killed.sh <moment> <mpiexec> <np flag> <coat-train> <config> [mpiexec flags...]
set -u
moment=$1 mpiexec=$2; np_flag=$3; program=$4; config=$5; shift 5
mpi_flags=("$@")
work=$(mktemp -d)
launcher=""
cleanup() { [ -n "$launcher" ] && { pkill -9 -P "$launcher"; kill -9 "$launcher"; } 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
fail() { tail -n 20 "$work/log"; echo "FAIL: $*"; exit 1; }
perl -e 'print pack("v*", map { ($_ * 7 + int($_ / 5)) % 64 } 0 .. 5999)' > "$work/tokens.bin"
ck=$work/run/checkpoints
case $moment in
  step) saves=(--set checkpoint.interval=0) ;;
  save) saves=(--set checkpoint.interval=1 --set checkpoint.async=false) ;;
  bgwrite) saves=(--set checkpoint.interval=2 --set checkpoint.async=true) ;;
  *) echo "unknown moment $moment"; exit 2 ;;
esac
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
command_for() {  # command_for <max steps> [args...]: the command line, in the array cmd
  local steps=$1; shift
  cmd=("$mpiexec" "${mpi_flags[@]}" "$np_flag" 3 "$program" --config "$config" --set data.path=\""$work/tokens.bin"\"
       --set data.format=\"u16\" --set train.max_steps="$steps" --set train.micro_batch_size=1
       --set train.global_batch_size=6 --set checkpoint.keep_last=0 --set train.eval_interval=0
       --set logging.progress=\"off\" --set logging.run_dir=\""$work/run"\" "${saves[@]}" "$@")
}
command_for 100000
"${cmd[@]}" > "$work/log" 2>&1 &  # not in a subshell: $! is mpirun's pid
launcher=$!
victim="" ranks=()
for _ in $(seq 1 600); do  # until rank 1 has trained a few steps (up to 60 s)
  if [ -f "$work/run/metrics.jsonl" ] && [ "$(wc -l < "$work/run/metrics.jsonl")" -ge 3 ]; then
    ranks=()
    for pid in $(pgrep -P "$launcher"); do  # this job's ranks only, not another test's
      if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -q "^OMPI_COMM_WORLD_RANK="; then ranks+=("$pid"); fi
      if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1"; then victim=$pid; fi
    done
    [ -n "$victim" ] && ((${#ranks[@]} == 3)) && break
  fi
  sleep 0.1
done
[ -n "$victim" ] || fail "training did not start or rank 1 was not found"

newest_complete() { local d last=""; for d in "$ck"/step_????????; do [ -f "$d/COMPLETE" ] && last=$d; done; echo "$last"; }
# The moment, checked with rank 1 frozen: a save in flight (a staging directory without COMPLETE) after a
# complete checkpoint, and for bgwrite the saved step's record written.
in_flight() {
  local staging
  for staging in "$ck"/step_*.tmp; do
    [ -d "$staging" ] && [ ! -f "$staging/COMPLETE" ] && [ -n "$(newest_complete)" ] || continue
    [ "$moment" == save ] && return 0
    local step=${staging##*/step_}; step=$((10#${step%.tmp}))
    grep -q "\"step\":$step," "$work/run/metrics.jsonl" && return 0
  done
  return 1
}
if [ "$moment" != step ]; then
  deadline=$((EPOCHSECONDS + 60))
  hit=false
  while ! $hit && ((EPOCHSECONDS < deadline)) && kill -0 "$victim" 2>/dev/null; do
    while ! compgen -G "$ck/step_*.tmp" > /dev/null && ((EPOCHSECONDS < deadline)); do :; done  # a tight look
    kill -STOP "${ranks[@]}"
    if in_flight; then hit=true; else kill -CONT "${ranks[@]}"; fi
  done
  $hit || fail "no $moment moment of rank 1 was caught in 60 s"
  before=$(newest_complete)
  what="$(cd "$ck" && echo step_*.tmp) in flight (rank 1's file: $(cd "$ck"/step_*.tmp && ls | grep rank_00001 || echo none)), ${before##*/} complete"
fi
start=$(date +%s)
kill -9 "$victim"
[ "$moment" != step ] && kill -CONT "${ranks[@]}" 2>/dev/null  # the others go on from the moment
status=124
for _ in $(seq 1 600); do
  if ! kill -0 "$launcher" 2>/dev/null; then wait "$launcher"; status=$?; break; fi
  sleep 0.1
done
elapsed=$(( $(date +%s) - start ))
echo "exit status $status ${elapsed} s after rank 1 (pid $victim) was killed${what:+ with $what}"
[ "$status" -ne 124 ] || fail "the job still ran 60 s after a rank was killed"
launcher=""
[ "$status" -ne 0 ] || fail "the job exited 0"
grep -q "rank 1 .*signal 9\|rank 1 .*Killed" "$work/log" || fail "the job's messages do not name rank 1"
grep -o "process rank 1 .*" "$work/log" | head -n 1

if [ "$moment" != step ]; then
  [ -f "$before/COMPLETE" ] || fail "${before##*/}, complete before the kill, is not any more"
  newest=$(newest_complete)
  last=${newest##*/step_}; last=$((10#$last))
  command_for $((last + 1)) --resume auto
  "${cmd[@]}" > "$work/log" 2>&1 || fail "the resume failed"
  grep -q "resumed from .*${newest##*/} (step $last" "$work/log" || fail "--resume auto did not take ${newest##*/}"
  grep -q "damaged" "$work/log" && fail "a checkpoint was found damaged"
  echo "${before##*/} still complete; --resume auto took ${newest##*/}, which verified"
fi
echo "PASS"
