// CapturedGraph: captured work launched again gives the eager results on the inputs' current contents; a
// capture that synchronises or throws fails clearly and leaves the stream usable.
#include <gtest/gtest.h>

#include <string>

#include "cuda_test_util.h"

#ifdef COAT_WITH_CUDA
#include "coat/backend/cuda/captured_graph.h"
#include "coat/backend/cuda/cuda_context.h"
#include "coat/core/error.h"
#include "coat/core/random_generator.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/elementwise.h"
#include "coat/ops/matmul.h"
#endif

namespace coat::test {
namespace {

#ifdef COAT_WITH_CUDA

class CapturedGraphTest : public CudaTest {
 protected:
  cuda::CudaContext& cuda_ctx() { return static_cast<cuda::CudaContext&>(*gpu); }
};

/// out <- (x @ w + b) * 0.5 in place (a cuBLASLt GEMM, an element-wise kernel, temporaries from the cache).
void work(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& out) {
  Tensor y = ops::matmul(x, w);
  ops::add_(y, b);
  ops::copy_(out, ops::scale(y, 0.5));
}

TEST_F(CapturedGraphTest, LaunchesComputeTheEagerResultOfTheCurrentInputs) {
  RandomGenerator rng{7, 0};
  Tensor x = Tensor::empty(gpu, {64, 96}, DType::F32);
  Tensor w = Tensor::empty(gpu, {96, 48}, DType::F32);
  Tensor b = Tensor::empty(gpu, {64, 48}, DType::F32);
  Tensor out = Tensor::empty(gpu, {64, 48}, DType::F32);
  for (Tensor* t : {&x, &w, &b}) ops::normal_(*t, rng, 0.0f, 1.0f);
  // Live before the capture: a tensor allocated after it could take a block the graph uses for a temporary.
  Tensor expected = Tensor::empty(gpu, {64, 48}, DType::F32);
  work(x, w, b, out);  // warm the plan cache and the allocator's cache, as a training step's first run does
  cuda::CapturedGraph graph(cuda_ctx(), [&] { work(x, w, b, out); });
  EXPECT_GE(graph.node_count(), 3u);
  for (int i = 0; i < 3; ++i) {
    ops::normal_(x, rng, 0.0f, 1.0f);  // new contents at the same address
    work(x, w, b, expected);
    ops::normal_(out, rng, 0.0f, 1.0f);  // the graph must overwrite this
    graph.launch();
    EXPECT_EQ(ops::to_bytes(out), ops::to_bytes(expected)) << "launch " << i;
  }
}

TEST_F(CapturedGraphTest, ASynchronisationInsideFailsTheCaptureAndTheStreamWorksAfter) {
  Tensor x = ops::from_vector(gpu, {4}, DType::F32, std::vector<float>{1, 2, 3, 4});
  try {
    cuda::CapturedGraph graph(cuda_ctx(), [&] {
      ops::scale_(x, 2.0);
      gpu->synchronize();
    });
    FAIL() << "a capture that synchronises must throw";
  } catch (const CudaError& e) {
    EXPECT_NE(std::string(e.what()).find("Synchronize"), std::string::npos) << e.what();
  }
  ops::scale_(x, 3.0);  // eager work on the same stream runs again
  const std::vector<double> values = ops::to_double_vector(x);
  ASSERT_EQ(values.size(), 4u);
  // The captured scale_ never ran: only the eager one did.
  EXPECT_EQ(values, (std::vector<double>{3, 6, 9, 12}));
}

TEST_F(CapturedGraphTest, AnExceptionFromTheWorkPropagatesAndEndsTheCapture) {
  Tensor x = ops::from_vector(gpu, {2}, DType::F32, std::vector<float>{1, 2});
  EXPECT_THROW(cuda::CapturedGraph(cuda_ctx(),
                                   [&] {
                                     ops::scale_(x, 2.0);
                                     throw InvalidArgument("from the work");
                                   }),
               InvalidArgument);
  ops::scale_(x, 5.0);
  EXPECT_EQ(ops::to_double_vector(x), (std::vector<double>{5, 10}));
}

#else

TEST(CapturedGraphTest, SkippedWithoutCuda) {
  GTEST_SKIP() << "built without CUDA";
}

#endif

}  // namespace
}  // namespace coat::test
