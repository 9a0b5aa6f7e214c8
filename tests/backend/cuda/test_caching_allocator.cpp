// CachingAllocator: size rounding, the reuse rule, steady state without cudaMalloc, statistics, release
// and out-of-memory handling.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#ifdef COAT_WITH_CUDA
#include <cuda_runtime_api.h>

#include "coat/backend/cuda/caching_allocator.h"
#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/cuda_context.h"
#include "coat/backend/cuda/device_properties.h"
#include "coat/core/tensor.h"
#endif

namespace {

#ifdef COAT_WITH_CUDA

using coat::MemoryCategory;
using coat::cuda::CachingAllocator;

constexpr size_t kKiB = size_t{1} << 10;
constexpr size_t kMiB = size_t{1} << 20;

class CachingAllocatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (coat::cuda::device_count(&why) == 0) GTEST_SKIP() << "no CUDA device: " << why;
  }
};

// Pure arithmetic: runs without a device.
TEST(CachingAllocatorRounding, SmallTo512BytesLargeTo2MiB) {
  EXPECT_EQ(CachingAllocator::round_size(1), 512u);
  EXPECT_EQ(CachingAllocator::round_size(512), 512u);
  EXPECT_EQ(CachingAllocator::round_size(513), 1024u);
  EXPECT_EQ(CachingAllocator::round_size(1000 * kKiB), 1000 * kKiB);
  EXPECT_EQ(CachingAllocator::round_size(kMiB), kMiB);
  EXPECT_EQ(CachingAllocator::round_size(kMiB + 1), 2 * kMiB);
  EXPECT_EQ(CachingAllocator::round_size(2 * kMiB), 2 * kMiB);
  EXPECT_EQ(CachingAllocator::round_size(3 * kMiB), 4 * kMiB);
  EXPECT_EQ(CachingAllocator::round_size(7 * kMiB + 5), 8 * kMiB);
}

TEST_F(CachingAllocatorTest, ZeroBytesGivesNullptr) {
  CachingAllocator alloc(0);
  EXPECT_EQ(alloc.allocate(0, MemoryCategory::Other), nullptr);
  alloc.deallocate(nullptr, 0, MemoryCategory::Other);
  EXPECT_EQ(alloc.memory_report().system_allocations, 0u);
}

TEST_F(CachingAllocatorTest, FreedBlockIsReusedWithoutCudaMalloc) {
  CachingAllocator alloc(0);
  void* p = alloc.allocate(1000, MemoryCategory::Activations);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 256, 0u);
  alloc.deallocate(p, 1000, MemoryCategory::Activations);
  EXPECT_EQ(alloc.cached_bytes(), 1024u);
  void* q = alloc.allocate(1000, MemoryCategory::Activations);
  EXPECT_EQ(q, p);
  EXPECT_EQ(alloc.memory_report().system_allocations, 1u);
  EXPECT_EQ(alloc.cached_bytes(), 0u);
  alloc.deallocate(q, 1000, MemoryCategory::Activations);
}

TEST_F(CachingAllocatorTest, ReuseRuleBoundsTheWaste) {
  CachingAllocator alloc(0);
  // Small pool: a 2048-byte block serves a 1024-byte request (<= 2x) but not a 512-byte one.
  void* small = alloc.allocate(2048, MemoryCategory::Other);
  alloc.deallocate(small, 2048, MemoryCategory::Other);
  void* tiny = alloc.allocate(512, MemoryCategory::Other);
  EXPECT_NE(tiny, small);
  void* fits = alloc.allocate(1000, MemoryCategory::Other);
  EXPECT_EQ(fits, small);
  // The reused block counts with its own size.
  EXPECT_EQ(alloc.memory_report().current(MemoryCategory::Other), 512u + 2048u);
  alloc.deallocate(tiny, 512, MemoryCategory::Other);
  alloc.deallocate(fits, 1000, MemoryCategory::Other);

  // Large pool: a 4 MiB block serves a 2 MiB request (<= rounded + 2 MiB), an 8 MiB block does not.
  void* four = alloc.allocate(4 * kMiB, MemoryCategory::Other);
  void* eight = alloc.allocate(8 * kMiB, MemoryCategory::Other);
  alloc.deallocate(four, 4 * kMiB, MemoryCategory::Other);
  alloc.deallocate(eight, 8 * kMiB, MemoryCategory::Other);
  void* two = alloc.allocate(kMiB + 1, MemoryCategory::Other);
  EXPECT_EQ(two, four);
  void* another_two = alloc.allocate(2 * kMiB, MemoryCategory::Other);
  EXPECT_NE(another_two, eight);
  // Small requests never take large blocks and vice versa.
  void* small_again = alloc.allocate(kMiB, MemoryCategory::Other);
  EXPECT_NE(small_again, eight);
  alloc.deallocate(two, kMiB + 1, MemoryCategory::Other);
  alloc.deallocate(another_two, 2 * kMiB, MemoryCategory::Other);
  alloc.deallocate(small_again, kMiB, MemoryCategory::Other);
}

TEST_F(CachingAllocatorTest, SteadyStateMakesNoSystemCalls) {
  CachingAllocator alloc(0);
  const std::vector<size_t> sizes = {100, 4096, 70000, 3 * kMiB, 17 * kMiB + 3, 512, 4096, 3 * kMiB};
  const auto one_step = [&] {
    std::vector<void*> ptrs;
    for (size_t bytes : sizes) ptrs.push_back(alloc.allocate(bytes, MemoryCategory::Activations));
    for (size_t i = ptrs.size(); i-- > 0;) alloc.deallocate(ptrs[i], sizes[i], MemoryCategory::Activations);
  };
  one_step();  // warm-up fills the cache
  const coat::MemoryReport warm = alloc.memory_report();
  EXPECT_EQ(warm.system_allocations, sizes.size());
  for (int step = 0; step < 10; ++step) one_step();
  const coat::MemoryReport after = alloc.memory_report();
  EXPECT_EQ(after.system_allocations, warm.system_allocations);
  EXPECT_EQ(after.system_frees, 0u);
  EXPECT_EQ(after.reserved_bytes, warm.reserved_bytes);
  EXPECT_EQ(after.current(MemoryCategory::Activations), 0u);
}

TEST_F(CachingAllocatorTest, StatisticsByCategoryAndReleaseCached) {
  CachingAllocator alloc(0);
  void* w = alloc.allocate(3 * kMiB, MemoryCategory::Weights);         // 4 MiB block
  void* g = alloc.allocate(600, MemoryCategory::Gradients);            // 1024-byte block
  void* o = alloc.allocate(5 * kMiB, MemoryCategory::OptimizerState);  // 6 MiB block
  coat::MemoryReport r = alloc.memory_report();
  EXPECT_EQ(r.current(MemoryCategory::Weights), 4 * kMiB);
  EXPECT_EQ(r.current(MemoryCategory::Gradients), 1024u);
  EXPECT_EQ(r.current(MemoryCategory::OptimizerState), 6 * kMiB);
  EXPECT_EQ(r.total_current_bytes, 10 * kMiB + 1024);
  EXPECT_EQ(r.reserved_bytes, 10 * kMiB + 1024);
  EXPECT_EQ(r.system_allocations, 3u);

  alloc.deallocate(o, 5 * kMiB, MemoryCategory::OptimizerState);
  r = alloc.memory_report();
  EXPECT_EQ(r.current(MemoryCategory::OptimizerState), 0u);
  EXPECT_EQ(r.peak(MemoryCategory::OptimizerState), 6 * kMiB);
  EXPECT_EQ(r.reserved_bytes, 10 * kMiB + 1024);  // cached, still held
  EXPECT_EQ(alloc.cached_bytes(), 6 * kMiB);

  alloc.release_cached();
  r = alloc.memory_report();
  EXPECT_EQ(alloc.cached_bytes(), 0u);
  EXPECT_EQ(alloc.cached_blocks(), 0u);
  EXPECT_EQ(r.reserved_bytes, 4 * kMiB + 1024);
  EXPECT_EQ(r.peak_reserved_bytes, 10 * kMiB + 1024);
  EXPECT_EQ(r.system_frees, 1u);

  alloc.reset_peaks();
  EXPECT_EQ(alloc.memory_report().peak(MemoryCategory::OptimizerState), 0u);
  alloc.deallocate(w, 3 * kMiB, MemoryCategory::Weights);
  alloc.deallocate(g, 600, MemoryCategory::Gradients);
  EXPECT_EQ(alloc.memory_report().total_current_bytes, 0u);
}

TEST_F(CachingAllocatorTest, OutOfMemoryReleasesTheCacheAndExplains) {
  CachingAllocator alloc(0);
  void* cached = alloc.allocate(4 * kMiB, MemoryCategory::Activations);
  alloc.deallocate(cached, 4 * kMiB, MemoryCategory::Activations);
  ASSERT_EQ(alloc.cached_bytes(), 4 * kMiB);
  const size_t huge = size_t{1} << 50;  // 1 PiB
  try {
    (void)alloc.allocate(huge, MemoryCategory::Activations);
    FAIL() << "expected OutOfMemory";
  } catch (const coat::OutOfMemory& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(std::to_string(huge)), std::string::npos) << what;
    EXPECT_NE(what.find("activations"), std::string::npos) << what;
    EXPECT_NE(what.find("category"), std::string::npos) << what;  // the report table's header
    EXPECT_NE(what.find("HINT"), std::string::npos) << what;
  }
  EXPECT_EQ(alloc.cached_bytes(), 0u);  // released before the retry
  EXPECT_EQ(alloc.memory_report().system_frees, 1u);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // no lingering error for the next kernel launch check
  // Still usable afterwards.
  void* p = alloc.allocate(kMiB, MemoryCategory::Activations);
  EXPECT_NE(p, nullptr);
  alloc.deallocate(p, kMiB, MemoryCategory::Activations);
}

TEST_F(CachingAllocatorTest, TensorsOfAContextReuseMemoryAcrossSteps) {
  auto ctx = std::make_shared<coat::cuda::CudaContext>(0);
  const auto step = [&] {
    coat::Tensor x = coat::Tensor::empty(ctx, {64, 1024}, coat::DType::BF16);
    coat::Tensor y = coat::Tensor::empty(ctx, {64, 4096}, coat::DType::F32);
    COAT_CUDA_CHECK(cudaMemsetAsync(y.data_ptr(), 0, y.nbytes(), ctx->stream()));
  };
  step();
  const uint64_t allocations = ctx->allocator().memory_report().system_allocations;
  for (int i = 0; i < 5; ++i) step();
  ctx->synchronize();
  EXPECT_EQ(ctx->allocator().memory_report().system_allocations, allocations);
  EXPECT_EQ(ctx->allocator().memory_report().current(MemoryCategory::Activations), 0u);
}

TEST_F(CachingAllocatorTest, DirectModeNeitherRoundsNorCaches) {
  CachingAllocator alloc(0, coat::cuda::AllocatorMode::Direct);
  void* p = alloc.allocate(1000, MemoryCategory::Activations);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(alloc.memory_report().current(MemoryCategory::Activations), 1000u);  // not rounded to 1024
  alloc.deallocate(p, 1000, MemoryCategory::Activations);
  EXPECT_EQ(alloc.cached_blocks(), 0u);
  EXPECT_EQ(alloc.memory_report().reserved_bytes, 0u);
  EXPECT_EQ(alloc.memory_report().system_frees, 1u);
  void* q = alloc.allocate(1000, MemoryCategory::Activations);
  EXPECT_EQ(alloc.memory_report().system_allocations, 2u);  // a new cudaMalloc, not the freed block
  alloc.deallocate(q, 1000, MemoryCategory::Activations);
}

TEST(CachingAllocatorMode, EnvironmentNamesTheMode) {
  const char* saved = std::getenv("COAT_CUDA_ALLOCATOR");
  const std::string restore = saved != nullptr ? saved : "";
  unsetenv("COAT_CUDA_ALLOCATOR");
  EXPECT_EQ(coat::cuda::allocator_mode_from_environment(), coat::cuda::AllocatorMode::Caching);
  setenv("COAT_CUDA_ALLOCATOR", "direct", 1);
  EXPECT_EQ(coat::cuda::allocator_mode_from_environment(), coat::cuda::AllocatorMode::Direct);
  setenv("COAT_CUDA_ALLOCATOR", "pooled", 1);
  try {
    (void)coat::cuda::allocator_mode_from_environment();
    ADD_FAILURE() << "an unknown mode was accepted";
  } catch (const coat::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("COAT_CUDA_ALLOCATOR is 'pooled'"), std::string::npos) << e.what();
  }
  if (saved != nullptr) setenv("COAT_CUDA_ALLOCATOR", restore.c_str(), 1); else unsetenv("COAT_CUDA_ALLOCATOR");
}

#else  // built without CUDA

TEST(CachingAllocatorTest, Skipped) {
  GTEST_SKIP() << "built without CUDA";
}

#endif

}  // namespace
