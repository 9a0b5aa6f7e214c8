// Shared by the CUDA benchmarks (disabled tests): the median device time of a piece of work.
#pragma once

#ifdef COAT_WITH_CUDA
#include <cuda_runtime_api.h>

#include <algorithm>
#include <vector>

#include "coat/backend/cuda/check.h"

namespace coat::test {

/// Median device time in ms of fn over `reps` runs after `warmups` unmeasured ones, measured with events on
/// stream.
template <typename Fn>
double median_ms(cudaStream_t stream, int reps, Fn&& fn, int warmups = 2) {
  cudaEvent_t start, stop;
  COAT_CUDA_CHECK(cudaEventCreate(&start));
  COAT_CUDA_CHECK(cudaEventCreate(&stop));
  for (int i = 0; i < warmups; ++i) fn();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    COAT_CUDA_CHECK(cudaEventRecord(start, stream));
    fn();
    COAT_CUDA_CHECK(cudaEventRecord(stop, stream));
    COAT_CUDA_CHECK(cudaEventSynchronize(stop));
    float t = 0.0f;
    COAT_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  COAT_CUDA_CHECK(cudaEventDestroy(start));
  COAT_CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace coat::test
#endif
