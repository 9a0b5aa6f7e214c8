#!/usr/bin/env bash
# An exception on one rank must end every rank: runs rank_failure under mpirun and checks that the job
# exits non-zero within 10 s and that the log names the failing rank.
# Usage: check_rank_failure.sh <mpiexec> <np flag> <rank_failure binary> [mpiexec flags...]
set -u
mpiexec=$1; np_flag=$2; program=$3; shift 3
start=$(date +%s)
output=$(timeout 60 "$mpiexec" "$@" "$np_flag" 3 "$program" 2>&1)
status=$?
elapsed=$(( $(date +%s) - start ))
echo "$output"
echo "exit status $status after ${elapsed} s"
if [ "$status" -eq 0 ]; then echo "FAIL: the job exited 0"; exit 1; fi
if [ "$status" -eq 124 ]; then echo "FAIL: the job hung (killed after 60 s)"; exit 1; fi
if [ "$elapsed" -gt 10 ]; then echo "FAIL: the job took ${elapsed} s to end (limit 10 s)"; exit 1; fi
if ! grep -q "\[rank 1\] deliberate failure on one rank" <<<"$output"; then
  echo "FAIL: the log does not name the failing rank"; exit 1
fi
echo "PASS"
