#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ with clang, AddressSanitizer and UndefinedBehaviorSanitizer into
# build-fuzz/, then runs each for SECONDS (default 60) from its seed corpus (fuzz/corpus/<target>/; what a run
# finds goes into build-fuzz/corpus/<target>/), after replaying the crashers fixed so far (fuzz/regressions/). Prints, per target, the executions and seconds libFuzzer
# reports, and exits non-zero when a target crashed (its input in build-fuzz/crashes/<target>/; reproduce with
# build-fuzz/fuzz/fuzz_<target> <file>).
#   scripts/fuzz.sh [SECONDS] [TARGET ...]     targets: config token_file loss_mask tensor_file checkpoint_meta
#                                                       safetensors hf_config hf_encoder (default: all)
# Environment: COAT_FUZZ_BUILD_DIR (build-fuzz), COAT_FUZZ_RUNS (stop each target after this many executions
# instead), COAT_FUZZ_CXX (clang++-14, else clang++), COAT_JOBS (build jobs: all cores).
# Without clang and its libFuzzer runtime (Debian: clang-14 libclang-rt-14-dev) it says so and exits 77.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds=${1:-60}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(config token_file loss_mask tensor_file checkpoint_meta safetensors hf_config hf_encoder)
build_dir=${COAT_FUZZ_BUILD_DIR:-build-fuzz}

cxx=${COAT_FUZZ_CXX:-$(command -v clang++-14 || command -v clang++ || true)}
cc=${cxx/clang++/clang}
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
if [[ -z $cxx ]]; then echo "fuzz: skipped: no clang++ (Debian: apt-get install clang-14 libclang-rt-14-dev)"; exit 77; fi
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' > "$probe/p.cpp"
if ! "$cxx" -fsanitize=fuzzer,address,undefined "$probe/p.cpp" -o "$probe/p" 2>"$probe/err"; then
  echo "fuzz: skipped: $cxx cannot link libFuzzer ($(head -c 200 "$probe/err")); Debian: apt-get install libclang-rt-14-dev"
  exit 77
fi

generator=()
[[ ! -f $build_dir/CMakeCache.txt ]] && command -v ninja >/dev/null && generator=(-G Ninja)
CC=$cc CXX=$cxx cmake -S . -B "$build_dir" "${generator[@]}" -DCOAT_CUDA=OFF -DCOAT_FUZZ=ON -DCOAT_BUILD_TESTS=OFF \
  -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -gline-tables-only" >/dev/null || { echo "fuzz: configure failed"; exit 1; }
started=$(date +%s)
cmake --build "$build_dir" -j "${COAT_JOBS:-$(nproc)}" --target fuzz_all >"$probe/build.log" 2>&1 ||
  { tail -n 40 "$probe/build.log"; echo "fuzz: build failed"; exit 1; }
echo "fuzz: built ${#targets[@]} targets in $(( $(date +%s) - started )) s"

failed=0
build_abs=$(cd "$build_dir" && pwd)
for t in "${targets[@]}"; do
  exe=$build_dir/fuzz/fuzz_$t
  [[ -x $exe ]] || { echo "fuzz: no target '$t'"; failed=1; continue; }
  mkdir -p "$build_dir/corpus/$t" "$build_dir/crashes/$t"
  limit=(-max_total_time="$seconds")
  [[ -n ${COAT_FUZZ_RUNS:-} ]] && limit=(-runs="$COAT_FUZZ_RUNS")
  log=$build_dir/fuzz_$t.log
  # The crashers fixed so far (fuzz/regressions/) run first, with the seeds, under the sanitizers.
  inputs=("$build_abs/corpus/$t" "$PWD/fuzz/corpus/$t")
  [[ -d fuzz/regressions/$t ]] && inputs+=("$PWD/fuzz/regressions/$t")
  "$build_abs/fuzz/fuzz_$t" "${limit[@]}" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
    -artifact_prefix="$build_abs/crashes/$t/" "${inputs[@]}" >"$log" 2>&1
  status=$?
  runs=$(grep -oE '^stat::number_of_executed_units: [0-9]+' "$log" | grep -oE '[0-9]+$')
  took=$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$log" | grep -oE 'in [0-9]+' | grep -oE '[0-9]+')
  speed=$(( ${runs:-0} / (${took:-0} > 0 ? ${took:-1} : 1) ))
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1)
  if ((status != 0)); then
    failed=1
    grep -E 'ERROR: |runtime error|uncaught exception|SUMMARY|what\(\)' "$log" | head -n 8
    echo "fuzz: $t: CRASH after ${runs:-?} executions (log: $log; input: $(ls -t "$build_dir/crashes/$t" | head -1))"
  else
    echo "fuzz: $t: ${runs:-?} executions in ${took:-?} s (${speed:-?}/s, ${cov:-cov ?}), no crash"
  fi
done
exit "$failed"
