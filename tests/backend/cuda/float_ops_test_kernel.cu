// Device side of test_float_ops_cuda.cpp: the float_ops.h functions applied on the GPU to given bit patterns.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "coat/backend/cuda/check.h"
#include "coat/core/float_ops.h"

namespace coat::test {

__global__ void rcp_rn_test_kernel(uint32_t first, int64_t n, uint32_t* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = float_to_bits(rcp_rn(bits_to_float(first + static_cast<uint32_t>(i))));
}

/// out[i] = bits of rcp_rn(float with bits first + i) on the GPU, i < n; out is a device buffer.
void launch_rcp_rn_test_kernel(uint32_t first, int64_t n, uint32_t* out, cudaStream_t stream) {
  constexpr int kThreads = 256;
  rcp_rn_test_kernel<<<static_cast<unsigned>((n + kThreads - 1) / kThreads), kThreads, 0, stream>>>(first, n, out);
  COAT_CUDA_CHECK_LAST_LAUNCH();
}

}  // namespace coat::test
