// The CUPTI kernel profiler: a known kernel launched N times appears with N calls; nothing is counted
// outside start()/stop().
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "cuda_test_util.h"

#if defined(COAT_WITH_CUDA) && defined(COAT_HAVE_CUPTI)
#include <cuda_runtime_api.h>

#include "coat/backend/cuda/cuda_context.h"
#include "coat/backend/cuda/kernel_profiler.h"
#include "coat/core/error.h"

namespace coat::test {
void launch_profiler_test_kernel(int times, cudaStream_t stream);  // profiler_test_kernel.cu
}
#endif

namespace coat::test {
namespace {

class KernelProfilerTest : public CudaTest {};

#if defined(COAT_WITH_CUDA) && defined(COAT_HAVE_CUPTI)
const cuda::KernelActivity* find_test_kernel(const std::vector<cuda::KernelActivity>& kernels) {
  auto it = std::find_if(kernels.begin(), kernels.end(), [](const cuda::KernelActivity& k) {
    return k.name.find("coat_profiler_test_kernel") != std::string::npos;
  });
  return it == kernels.end() ? nullptr : &*it;
}
#endif

TEST_F(KernelProfilerTest, CountsEveryLaunchOfAKnownKernel) {
#if !defined(COAT_HAVE_CUPTI)
  GTEST_SKIP() << "built without CUPTI";
#else
  const cudaStream_t stream = dynamic_cast<cuda::CudaContext&>(*gpu).stream();
  launch_profiler_test_kernel(3, stream);  // before start(): not counted
  constexpr int kLaunches = 37;
  {
    cuda::KernelProfiler profiler;
    profiler.start();
    EXPECT_TRUE(profiler.recording());
    launch_profiler_test_kernel(kLaunches, stream);
    profiler.stop();
    EXPECT_FALSE(profiler.recording());
    launch_profiler_test_kernel(5, stream);  // after stop(): not counted
    gpu->synchronize();

    const std::vector<cuda::KernelActivity> kernels = profiler.kernels();
    const cuda::KernelActivity* k = find_test_kernel(kernels);
    ASSERT_NE(k, nullptr) << "the test kernel is missing from " << kernels.size() << " kernels";
    EXPECT_EQ(k->calls, kLaunches);
    EXPECT_GT(k->total_ms, 0.0);
    EXPECT_EQ(profiler.dropped_records(), 0);

    // A second session adds to the first; clear() forgets both.
    profiler.start();
    launch_profiler_test_kernel(2, stream);
    profiler.stop();
    EXPECT_EQ(find_test_kernel(profiler.kernels())->calls, kLaunches + 2);
    profiler.clear();
    EXPECT_EQ(find_test_kernel(profiler.kernels()), nullptr);

    // One profiler at a time (CUPTI's buffers go to one per process).
    EXPECT_THROW({ cuda::KernelProfiler second; }, Error);
  }
  // Once the first is gone, a new one works.
  cuda::KernelProfiler again;
  again.start();
  launch_profiler_test_kernel(4, stream);
  again.stop();
  ASSERT_NE(find_test_kernel(again.kernels()), nullptr);
  EXPECT_EQ(find_test_kernel(again.kernels())->calls, 4);
#endif
}

}  // namespace
}  // namespace coat::test
