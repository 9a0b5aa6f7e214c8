#!/usr/bin/env bash
# A rank killed with SIGKILL (an OOM kill, a node lost) must end the whole job, not leave the others waiting
# in a collective: trains under mpirun -np 3, kills rank 1 once training runs, and checks that mpirun exits
# non-zero within 60 s.
# Usage: check_rank_killed.sh <mpiexec> <np flag> <coat-train> <config> [mpiexec flags...]
set -u
mpiexec=$1; np_flag=$2; program=$3; config=$4; shift 4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
perl -e 'print pack("v*", map { ($_ * 7 + int($_ / 5)) % 64 } 0 .. 5999)' > "$work/tokens.bin"
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "$mpiexec" "$@" "$np_flag" 3 "$program" --config "$config" \
  --set data.path=\""$work/tokens.bin"\" --set data.format=\"u16\" --set train.max_steps=100000 \
  --set train.micro_batch_size=1 --set train.global_batch_size=6 --set checkpoint.interval=0 \
  --set train.eval_interval=0 --set logging.run_dir=\""$work/run"\" > "$work/log" 2>&1 &
launcher=$!
victim=""
for _ in $(seq 1 600); do  # until rank 1 has trained a few steps (up to 60 s)
  if [ -f "$work/run/metrics.jsonl" ] && [ "$(wc -l < "$work/run/metrics.jsonl")" -ge 3 ]; then
    for pid in $(pgrep -P "$launcher"); do  # this job's ranks only, not another test's
      if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1"; then victim=$pid; fi
    done
    [ -n "$victim" ] && break
  fi
  sleep 0.1
done
if [ -z "$victim" ]; then
  kill -9 "$launcher" 2>/dev/null; cat "$work/log"; echo "FAIL: training did not start or rank 1 was not found"; exit 1
fi
start=$(date +%s)
kill -9 "$victim"
status=124
for _ in $(seq 1 600); do
  if ! kill -0 "$launcher" 2>/dev/null; then wait "$launcher"; status=$?; break; fi
  sleep 0.1
done
elapsed=$(( $(date +%s) - start ))
tail -n 20 "$work/log"
echo "exit status $status ${elapsed} s after rank 1 (pid $victim) was killed"
if [ "$status" -eq 124 ]; then
  pkill -9 -P "$launcher"; kill -9 "$launcher"; echo "FAIL: the job still ran 60 s after a rank was killed"; exit 1
fi
if [ "$status" -eq 0 ]; then echo "FAIL: the job exited 0"; exit 1; fi
echo "PASS"
