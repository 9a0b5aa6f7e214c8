#!/usr/bin/env bash
# Builds the CPU library, tools and tests with AddressSanitizer (LeakSanitizer included) and
# UndefinedBehaviorSanitizer into build-asan/ and runs the whole CPU test suite under them; any finding fails
# its test. Open MPI's own allocations that live until exit are suppressed (scripts/lsan.supp); the ranks
# that mpirun starts run without leak checks (tests/dist/CMakeLists.txt says why), with ASan and UBSan.
#   scripts/sanitize.sh [ctest arguments, e.g. -R Trainer]
# Environment: COAT_SANITIZE_BUILD_DIR (build-asan), COAT_JOBS (all cores).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build_dir=${COAT_SANITIZE_BUILD_DIR:-build-asan}
generator=()
[[ ! -f $build_dir/CMakeCache.txt ]] && command -v ninja >/dev/null && generator=(-G Ninja)
started=$(date +%s)
cmake -S . -B "$build_dir" "${generator[@]}" -DCOAT_CUDA=OFF -DCOAT_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" >/dev/null || { echo "sanitize: configure failed"; exit 1; }
cmake --build "$build_dir" -j "${COAT_JOBS:-$(nproc)}" || { echo "sanitize: build failed"; exit 1; }
built=$(date +%s)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/scripts/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --test-dir "$build_dir" --output-on-failure -j "${COAT_JOBS:-$(nproc)}" --timeout 1200 "$@"
status=$?
echo "sanitize: built in $((built - started)) s, tests ran in $(( $(date +%s) - built )) s (ASan + UBSan, exit $status)"
exit "$status"
