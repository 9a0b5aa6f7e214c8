// A kernel with a name to look for in the kernel profiler's table (test_kernel_profiler.cpp).
#include <cuda_runtime_api.h>

#include "coat/backend/cuda/check.h"

namespace coat::test {

__global__ void coat_profiler_test_kernel(float* data, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) data[i] = data[i] * 0.5f + 1.0f;
}

void launch_profiler_test_kernel(int times, cudaStream_t stream) {
  constexpr int n = 1 << 16;
  float* data = nullptr;
  COAT_CUDA_CHECK(cudaMalloc(&data, n * sizeof(float)));
  COAT_CUDA_CHECK(cudaMemsetAsync(data, 0, n * sizeof(float), stream));
  for (int k = 0; k < times; ++k) {
    coat_profiler_test_kernel<<<(n + 255) / 256, 256, 0, stream>>>(data, n);
    COAT_CUDA_CHECK_LAST_LAUNCH();
  }
  COAT_CUDA_CHECK(cudaStreamSynchronize(stream));
  COAT_CUDA_CHECK(cudaFree(data));
}

}  // namespace coat::test
