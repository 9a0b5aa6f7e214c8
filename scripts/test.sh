#!/usr/bin/env bash
# Runs setup (install, configure, build) and then the whole test suite; ends with a one-line summary.
# CUDA tests skip with a reason on machines without a GPU. Then each libFuzzer target (fuzz/) runs for
# COAT_FUZZ_SECONDS (default 3; 0 skips) when clang with libFuzzer is here (scripts/fuzz.sh; a few minutes,
# most of them building), else it says why it skipped.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh || { echo "coat-train tests: SETUP FAILED"; exit 1; }
build_dir=${COAT_BUILD_DIR:-build}
log=$(mktemp)
ctest --test-dir "$build_dir" --output-on-failure -j "${COAT_JOBS:-$(nproc)}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
passed=$(grep -cE 'Test +#[0-9]+: .*  +Passed' "$log")
skipped=$(grep -cE 'Test +#[0-9]+: .*Skipped' "$log")
failed=$(grep -E 'Test +#[0-9]+: .*\*\*\*(Failed|Exception|Timeout|Not Run)' "$log" | grep -cv '(Disabled)')
disabled=$(grep -cE 'Test +#[0-9]+: .*\*\*\*Not Run \(Disabled\)' "$log")
rm -f "$log"
fuzz_seconds=${COAT_FUZZ_SECONDS:-3}
if [[ $fuzz_seconds != 0 ]]; then
  fuzz_started=$(date +%s)
  bash scripts/fuzz.sh "$fuzz_seconds"
  fuzz_status=$?
  echo "fuzz: $(( $(date +%s) - fuzz_started )) s in all"
  if ((fuzz_status == 77)); then
    :  # skipped, with the reason printed
  elif ((fuzz_status != 0)); then
    echo "coat-train tests: FUZZ FAILED (a target crashed or did not build; see above)"
    status=1
    failed=$((failed + 1))
  fi
fi
gpu=$([[ -n "$(command -v nvidia-smi)" ]] && nvidia-smi -L 2>/dev/null | head -1 || echo "no GPU")
echo "coat-train tests: $passed passed, $skipped skipped, $failed failed, $disabled disabled benchmarks ($gpu)"
exit "$status"
