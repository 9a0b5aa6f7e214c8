#!/usr/bin/env bash
# Runs CUDA test binaries under NVIDIA's compute-sanitizer (memcheck, racecheck, initcheck or synccheck) on a
# GPU machine, one sanitizer process per test binary, and reports per binary the tests run and the errors
# found (the log of each, in --out, names the kernel and the test around an error). The caching allocator is
# switched off (COAT_CUDA_ALLOCATOR=direct: every tensor its own exact cudaMalloc, freed at once) and memcheck
# pads each allocation (--padding), so that an access past the end of a tensor lands outside any allocation
# instead of in a neighbour inside a cached block.
#   scripts/cuda_sanitize.sh [--tool memcheck|racecheck|initcheck|synccheck] [--bin DIR] [--filter GTEST]
#                            [--out DIR] [SUITE ...]
#   SUITE: backend_cuda ops nn models optim train io data autograd core (default: those with GPU tests:
#          backend_cuda ops models train io core), run as DIR/tests/coat_test_SUITE (default DIR: build).
#   --filter  a gtest filter (default '*Cuda*:*CUDA*:*Gpu*:*GPU*:*cuda*' less these: CheckMacros.* and
#             CudaContextTest.MissingDeviceIsAnError, which provoke CUDA API errors on purpose (an invalid device
#             ordinal) to test our messages, and
#             CudaOps.SteadyStateMakesNoDeviceAllocations, which counts cudaMallocs and so cannot pass under the
#             direct allocator the sanitizers need).
# A binary whose matching tests make no CUDA call (the sanitizer says "terminated before first instrumented API
# call") passes when its tests pass. racecheck hazards inside library kernels (cuDNN's and cuBLAS's wgmma/TMA
# kernels synchronise through mbarriers and the async proxy, which racecheck does not follow) are counted and
# listed but do not fail the run; a hazard in one of our kernels (coat::) does.
# Exits non-zero when the sanitizer reported an error in any test (the logs in --out name them).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tool=memcheck; bin=build; out=""; suites=()
filter='*Cuda*:*CUDA*:*Gpu*:*GPU*:*cuda*-CheckMacros.*:CudaContextTest.MissingDeviceIsAnError:CudaOps.SteadyStateMakesNoDeviceAllocations'
while [[ $# -gt 0 ]]; do
  case $1 in
    --tool) tool=$2; shift 2 ;; --bin) bin=$2; shift 2 ;; --filter) filter=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "cuda_sanitize.sh: unknown option $1" >&2; exit 2 ;;
    *) suites+=("$1"); shift ;;
  esac
done
((${#suites[@]})) || suites=(backend_cuda ops models train io core)
out=${out:-/tmp/coat-sanitize-$tool}
mkdir -p "$out"
sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
[[ -x $sanitizer ]] || { echo "cuda_sanitize.sh: no compute-sanitizer (CUDA toolkit)"; exit 77; }
extra=(--error-exitcode 97)
[[ $tool == memcheck ]] && extra+=(--padding 4096 --leak-check full)
[[ $tool == racecheck ]] && extra+=(--racecheck-report analysis)
export COAT_CUDA_ALLOCATOR=direct
started=$(date +%s); failed=0
for suite in "${suites[@]}"; do
  exe=$bin/tests/coat_test_$suite
  [[ -x $exe ]] || { echo "$suite: no $exe"; failed=1; continue; }
  count=$("$exe" --gtest_list_tests --gtest_filter="$filter" 2>/dev/null | grep -c '^  ')
  ((count > 0)) || { echo "$suite: no test matches $filter"; continue; }
  log=$out/$suite.log
  t0=$(date +%s)
  "$sanitizer" --tool "$tool" "${extra[@]}" "$exe" --gtest_filter="$filter" --gtest_brief=1 > "$log" 2>&1
  status=$?
  # memcheck, initcheck and synccheck end with "ERROR SUMMARY: N errors"; racecheck with "RACECHECK SUMMARY: N
  # hazards displayed (N errors, N warnings)".
  summary=$(grep -E "(ERROR|RACECHECK) SUMMARY" "$log" | tail -1)
  passed=$(grep -oE '^\[  PASSED  \] [0-9]+' "$log" | grep -oE '[0-9]+$')
  gtest_failed=$(grep -cE '^\[  FAILED  \]' "$log")
  if [[ -z $summary ]] && ((gtest_failed == 0)) && [[ -n $passed ]] &&
     grep -q "terminated before first instrumented API call" "$log"; then
    echo "$suite: $tool: $count tests, $passed passed, no CUDA call to check ($(( $(date +%s) - t0 )) s)"
    continue
  fi
  if [[ $tool == racecheck ]] && ((gtest_failed == 0)) && [[ -n $summary ]]; then
    ours=$(grep -E '^========= Error: Race reported' "$log" | grep -c 'coat::')
    library=$(grep -E '^========= Error: Race reported' "$log" | grep -vc 'coat::')
    if ((ours == 0)); then
      echo "$suite: racecheck: $count tests, ${passed:-?} passed, 0 hazards in our kernels; $library race reports in" \
           "library kernels: $summary ($(( $(date +%s) - t0 )) s)"
      grep -E '^========= Error: Race reported' "$log" | grep -oE 'at [A-Za-z_][A-Za-z0-9_]*' | sort | uniq -c | head -4
      continue
    fi
  fi
  # An API error that a library provokes and handles itself (NCCL probes its kernels with
  # cudaFuncGetAttributes and skips those without an image for this device) is listed, not failed: every
  # error the summary counts must be such a "Program hit" whose first host frame is in libnccl, libcudnn or
  # libcublas.
  if [[ $tool == memcheck ]] && ((gtest_failed == 0)) && [[ -n $summary ]]; then
    errors=$(grep -oE 'ERROR SUMMARY: [0-9]+' <<< "$summary" | grep -oE '[0-9]+$')
    library=$(awk '/^========= Program hit/ { hit = 1; next }
                   hit && /Host Frame:/ { if ($0 ~ /in lib(nccl|cudnn|cublas)[A-Za-z0-9_]*\.so/) n++; hit = 0 }
                   END { print n + 0 }' "$log")
    if ((errors > 0 && errors == library)); then
      echo "$suite: memcheck: $count tests, ${passed:-?} passed, 0 errors in our code; $library API errors raised" \
           "and handled inside libraries: $summary ($(( $(date +%s) - t0 )) s)"
      grep -E '^========= Program hit' "$log" | sed -E 's/ on CUDA API call to / -> /' | sort | uniq -c | head -4
      continue
    fi
  fi
  if ((status != 0)) || ! [[ $summary =~ (^|[^0-9])0\ errors ]] || ((gtest_failed > 0)); then
    failed=1
    echo "$suite: $tool: status $status, ${summary:-no summary} ($count tests; log $log)"
    grep -E '^\[  FAILED  \]|^========= (Invalid|Race|Uninitialized|Error|Barrier|Program hit)' "$log" | sort | uniq -c | head -8
  else
    echo "$suite: $tool: $count tests, ${passed:-?} passed, $summary ($(( $(date +%s) - t0 )) s)"
  fi
done
echo "cuda_sanitize.sh: $tool over ${suites[*]} in $(( $(date +%s) - started )) s, exit $failed"
exit "$failed"
