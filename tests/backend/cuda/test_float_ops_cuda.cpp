// float_ops.h on the GPU against the host: rcp_rn (the AdamW step's 1 / (sqrt(v) + eps)) gives the bits of the
// host's correctly rounded 1.0f / x for every one of the 2^32 float bit patterns (NaN for NaN, any payload).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "coat/core/float_ops.h"
#include "cuda_test_util.h"

#ifdef COAT_WITH_CUDA
#include <cuda_runtime_api.h>

#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/cuda_context.h"

namespace coat::test {
void launch_rcp_rn_test_kernel(uint32_t first, int64_t n, uint32_t* out, cudaStream_t stream);  // float_ops_test_kernel.cu
}
#endif

namespace coat::test {
namespace {

class CudaFloatOps : public CudaTest {};

TEST_F(CudaFloatOps, ReciprocalIsTheHostsDivisionForEveryFloat) {
#ifdef COAT_WITH_CUDA
  const cudaStream_t stream = dynamic_cast<cuda::CudaContext&>(*gpu).stream();
  constexpr int64_t kChunk = int64_t{1} << 26;
  uint32_t* device = nullptr;
  COAT_CUDA_CHECK(cudaMalloc(&device, kChunk * sizeof(uint32_t)));
  std::vector<uint32_t> host(static_cast<size_t>(kChunk));
  int64_t mismatches = 0, nans = 0, infinities = 0, subnormal_inputs = 0;
  for (int64_t first = 0; first < (int64_t{1} << 32); first += kChunk) {
    launch_rcp_rn_test_kernel(static_cast<uint32_t>(first), kChunk, device, stream);
    COAT_CUDA_CHECK(cudaMemcpyAsync(host.data(), device, kChunk * sizeof(uint32_t), cudaMemcpyDeviceToHost, stream));
    COAT_CUDA_CHECK(cudaStreamSynchronize(stream));
    for (int64_t i = 0; i < kChunk; ++i) {
      const uint32_t bits = static_cast<uint32_t>(first + i);
      const float x = bits_to_float(bits);
      const float want = div_rn(1.0f, x);
      const float got = bits_to_float(host[static_cast<size_t>(i)]);
      const bool same = std::isnan(want) ? std::isnan(got) : float_to_bits(got) == float_to_bits(want);
      nans += std::isnan(want);
      infinities += std::isinf(want);
      subnormal_inputs += std::fpclassify(x) == FP_SUBNORMAL;
      if (!same && ++mismatches <= 8) {
        ADD_FAILURE() << "rcp_rn(0x" << std::hex << bits << ") on the GPU = 0x" << host[static_cast<size_t>(i)]
                      << ", the host's 1.0f / x = 0x" << float_to_bits(want) << std::dec;
      }
    }
  }
  COAT_CUDA_CHECK(cudaFree(device));
  EXPECT_EQ(mismatches, 0);
  // The sweep met the special cases: NaN inputs, zeros and subnormals whose reciprocal overflows.
  EXPECT_GT(nans, 0);
  EXPECT_GT(infinities, 2);
  EXPECT_GT(subnormal_inputs, 0);
#endif
}

TEST(FloatOps, ReciprocalIsTheDivisionOnTheHost) {
  for (float x : {1.0f, 3.0f, -7.5f, 1e-30f, 1e30f, 1e-40f, 0.0f, -0.0f, INFINITY, -INFINITY}) {
    EXPECT_EQ(float_to_bits(rcp_rn(x)), float_to_bits(div_rn(1.0f, x))) << x;
  }
  EXPECT_TRUE(std::isnan(rcp_rn(NAN)));
}

}  // namespace
}  // namespace coat::test
