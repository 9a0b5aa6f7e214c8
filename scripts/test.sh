#!/usr/bin/env bash
# Runs setup (install, configure, build) and then the whole test suite; ends with a one-line summary.
# CUDA tests skip with a reason on machines without a GPU.
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
gpu=$([[ -n "$(command -v nvidia-smi)" ]] && nvidia-smi -L 2>/dev/null | head -1 || echo "no GPU")
echo "coat-train tests: $passed passed, $skipped skipped, $failed failed, $disabled disabled benchmarks ($gpu)"
exit "$status"
