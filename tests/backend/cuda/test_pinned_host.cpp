// Pinned host memory (cuda/pinned_host.h) as the asynchronous checkpoint uses it: ops::host_staging_context
// of a CUDA context allocates page-locked CPU tensors, counted in its own report; device state copied into
// them (io::copy_bits) comes back bit for bit, FP8 codes and NaN payloads included.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#ifdef COAT_WITH_CUDA
#include <cuda_runtime_api.h>

#include "coat/backend/cuda/device_properties.h"
#include "coat/core/error.h"
#include "coat/core/tensor.h"
#include "coat/io/tensor_bytes.h"
#include "coat/ops/copy.h"
#include "coat/ops/runtime.h"
#endif

namespace {

#ifdef COAT_WITH_CUDA

class PinnedHostTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (coat::cuda::device_count(&why) == 0) GTEST_SKIP() << "no CUDA device: " << why;
  }
};

TEST_F(PinnedHostTest, DeviceStateCopiesIntoPinnedBuffersBitForBit) {
  using namespace coat;
  const ContextPtr cuda = ops::make_context(Device::cuda(0));
  const ContextPtr host = ops::host_staging_context(cuda);
  ASSERT_NE(host, cuda);
  EXPECT_TRUE(host->device().is_cpu());
  EXPECT_EQ(ops::host_staging_context(ops::make_context(Device::cpu()))->device(), Device::cpu());

  // Bytes that a conversion would change: a NaN with a payload, negative zero, FP8 codes.
  std::vector<uint32_t> words(1000);
  for (size_t i = 0; i < words.size(); ++i) words[i] = static_cast<uint32_t>(i * 2654435761u);
  words[0] = 0x7fc12345u;
  words[1] = 0x80000000u;
  const ContextPtr cpu = ops::make_context(Device::cpu());
  Tensor source = Tensor::empty(cpu, {1000}, DType::F32);
  std::memcpy(source.data_ptr(), words.data(), source.nbytes());
  const Tensor on_device = ops::to(source, cuda);
  Tensor code_bytes = Tensor::empty(cpu, {4000}, DType::U8);
  std::memcpy(code_bytes.data_ptr(), words.data(), code_bytes.nbytes());
  const Tensor codes = ops::to(code_bytes.view_as(DType::E4M3), cuda);

  Tensor pinned = Tensor::empty(host, {1000}, DType::F32, MemoryCategory::CheckpointSnapshot);
  EXPECT_EQ(host->allocator().memory_report().current(MemoryCategory::CheckpointSnapshot), 4096u);
  cudaPointerAttributes attributes{};
  ASSERT_EQ(cudaPointerGetAttributes(&attributes, pinned.data_ptr()), cudaSuccess);
  EXPECT_EQ(attributes.type, cudaMemoryTypeHost) << "not page-locked";
  io::copy_bits(pinned, on_device);
  EXPECT_EQ(std::memcmp(pinned.data_ptr(), words.data(), pinned.nbytes()), 0);
  Tensor pinned_codes = Tensor::empty(host, {4000}, DType::E4M3, MemoryCategory::CheckpointSnapshot);
  io::copy_bits(pinned_codes, codes);
  EXPECT_EQ(std::memcmp(pinned_codes.data_ptr(), words.data(), pinned_codes.nbytes()), 0);
}

// Large enough that several threads fault the pages in before they are registered: every byte lands, and
// device-to-host copies at both ends of the buffer see pinned memory.
TEST_F(PinnedHostTest, LargeBufferIsPinnedEndToEnd) {
  using namespace coat;
  const ContextPtr cuda = ops::make_context(Device::cuda(0));
  const ContextPtr host = ops::host_staging_context(cuda);
  const int64_t n = int64_t{300} << 18;  // 300 MiB of F32
  Tensor pinned = Tensor::empty(host, {n}, DType::F32, MemoryCategory::CheckpointSnapshot);
  EXPECT_EQ(host->allocator().memory_report().current(MemoryCategory::CheckpointSnapshot),
            static_cast<uint64_t>(n) * 4);
  cudaPointerAttributes attributes{};
  auto* last = static_cast<float*>(pinned.data_ptr()) + (n - 1);
  ASSERT_EQ(cudaPointerGetAttributes(&attributes, last), cudaSuccess);
  EXPECT_EQ(attributes.type, cudaMemoryTypeHost) << "the end of the buffer is not page-locked";

  const ContextPtr cpu = ops::make_context(Device::cpu());
  Tensor source = Tensor::empty(cpu, {n}, DType::F32);
  auto* s = static_cast<float*>(source.data_ptr());
  for (int64_t i = 0; i < n; ++i) s[i] = static_cast<float>(i % 1000003) * 0.5f - 7.0f;
  io::copy_bits(pinned, ops::to(source, cuda));
  EXPECT_EQ(std::memcmp(pinned.data_ptr(), source.data_ptr(), pinned.nbytes()), 0);
}

// More than the machine has: a clear OutOfMemory that names the buffer's use and the way out, before any
// page is touched (faulting in more than the machine has would summon the OOM killer instead).
TEST_F(PinnedHostTest, MoreThanTheMachineHasIsAClearError) {
  using namespace coat;
  const ContextPtr host = ops::host_staging_context(ops::make_context(Device::cuda(0)));
  const int64_t n = int64_t{1} << 40;  // 4 TiB of F32
  try {
    (void)Tensor::empty(host, {n}, DType::F32, MemoryCategory::CheckpointSnapshot);
    FAIL() << "4 TiB of pinned memory were granted";
  } catch (const OutOfMemory& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("checkpoint.async = false"), std::string::npos) << what;
    EXPECT_NE(what.find("MemAvailable"), std::string::npos) << what;
  }
  EXPECT_EQ(host->allocator().memory_report().current(MemoryCategory::CheckpointSnapshot), 0u);
}

#else  // built without CUDA

TEST(PinnedHostTest, Skipped) {
  GTEST_SKIP() << "built without CUDA";
}

#endif

}  // namespace
