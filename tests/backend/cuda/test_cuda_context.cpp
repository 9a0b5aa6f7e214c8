// CudaContext, Stream/Event, DeviceProperties and the checking macros (check.h, mpi_check.h).
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>

#ifdef COAT_WITH_CUDA
#include <cuda_runtime_api.h>

#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/cuda_context.h"
#include "coat/backend/cuda/device_properties.h"
#include "coat/backend/cuda/stream.h"
#include "coat/core/tensor.h"
#include "coat/dist/mpi_check.h"
#endif

namespace {

#ifdef COAT_WITH_CUDA

class CudaContextTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (coat::cuda::device_count(&why) == 0) GTEST_SKIP() << "no CUDA device: " << why;
  }
};

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// ---- tests that need no device: the macros only look at the returned status ----

TEST(CudaDeviceCount, NeverThrows) {
  int count = -1;
  std::string why;
  EXPECT_NO_THROW(count = coat::cuda::device_count(&why));
  EXPECT_GE(count, 0);
  if (count == 0) {
    EXPECT_FALSE(why.empty());
  }
}

TEST(CheckMacros, CudaErrorNamesTheCall) {
  // Fails with or without a device (invalid device, no device or no driver).
  try {
    COAT_CUDA_CHECK(cudaSetDevice(9999));
    FAIL() << "expected CudaError";
  } catch (const coat::CudaError& e) {
    const std::string what = e.what();
    EXPECT_TRUE(contains(what, "cudaSetDevice(9999)")) << what;
    EXPECT_TRUE(contains(what, "test_cuda_context.cpp:")) << what;
    EXPECT_TRUE(contains(what, "[cuda]")) << what;
  }
  (void)cudaGetLastError();
}

TEST(CheckMacros, CudaErrorCarriesTheErrorString) {
  try {
    COAT_CUDA_CHECK(cudaErrorInvalidValue);
    FAIL() << "expected CudaError";
  } catch (const coat::CudaError& e) {
    EXPECT_TRUE(contains(e.what(), cudaGetErrorString(cudaErrorInvalidValue))) << e.what();
    EXPECT_TRUE(contains(e.what(), "cudaErrorInvalidValue")) << e.what();
  }
  EXPECT_NO_THROW(COAT_CUDA_CHECK(cudaSuccess));
}

TEST(CheckMacros, CublasCudnnNcclMpiErrorsAreTyped) {
  try {
    COAT_CUBLAS_CHECK(CUBLAS_STATUS_NOT_SUPPORTED);
    FAIL() << "expected CublasError";
  } catch (const coat::CublasError& e) {
    EXPECT_TRUE(contains(e.what(), "CUBLAS_STATUS_NOT_SUPPORTED")) << e.what();
    EXPECT_TRUE(contains(e.what(), cublasLtGetStatusString(CUBLAS_STATUS_NOT_SUPPORTED))) << e.what();
  }
  try {
    COAT_CUDNN_CHECK(CUDNN_STATUS_BAD_PARAM);
    FAIL() << "expected CudnnError";
  } catch (const coat::CudnnError& e) {
    EXPECT_TRUE(contains(e.what(), "CUDNN_STATUS_BAD_PARAM")) << e.what();
    EXPECT_TRUE(contains(e.what(), cudnnGetErrorString(CUDNN_STATUS_BAD_PARAM))) << e.what();
  }
  try {
    COAT_NCCL_CHECK(ncclInvalidArgument);
    FAIL() << "expected NcclError";
  } catch (const coat::NcclError& e) {
    EXPECT_TRUE(contains(e.what(), "ncclInvalidArgument")) << e.what();
    EXPECT_TRUE(contains(e.what(), ncclGetErrorString(ncclInvalidArgument))) << e.what();
  }
  try {
    COAT_MPI_CHECK(MPI_ERR_ARG);  // MPI is not initialised here: the message says so instead of a string
    FAIL() << "expected MpiError";
  } catch (const coat::MpiError& e) {
    EXPECT_TRUE(contains(e.what(), "MPI_ERR_ARG")) << e.what();
    EXPECT_TRUE(contains(e.what(), "[mpi]")) << e.what();
  }
  EXPECT_NO_THROW(COAT_CUBLAS_CHECK(CUBLAS_STATUS_SUCCESS));
  EXPECT_NO_THROW(COAT_CUDNN_CHECK(CUDNN_STATUS_SUCCESS));
  EXPECT_NO_THROW(COAT_NCCL_CHECK(ncclSuccess));
  EXPECT_NO_THROW(COAT_MPI_CHECK(MPI_SUCCESS));
}

TEST(CudaContextNoDevice, ConstructionFailsClearlyForAMissingDevice) {
  try {
    coat::cuda::CudaContext ctx(9999);
    FAIL() << "expected CudaError";
  } catch (const coat::CudaError& e) {
    EXPECT_TRUE(contains(e.what(), "[CudaContext]")) << e.what();
    EXPECT_TRUE(contains(e.what(), "HINT")) << e.what();
  }
}

// ---- tests that need a device ----

TEST_F(CudaContextTest, DevicePropertiesAreRead) {
  const coat::cuda::DeviceProperties p = coat::cuda::DeviceProperties::query(0);
  EXPECT_FALSE(p.name.empty());
  EXPECT_GE(p.compute_capability_major, 5);
  EXPECT_EQ(p.compute_capability(), p.compute_capability_major * 10 + p.compute_capability_minor);
  EXPECT_GT(p.multiprocessor_count, 0);
  EXPECT_GT(p.total_memory_bytes, size_t{1} << 30);
  EXPECT_GT(p.l2_cache_bytes, size_t{0});
  EXPECT_GE(p.max_shared_memory_per_block_optin_bytes, size_t{48} << 10);
  EXPECT_EQ(p.warp_size, 32);
  EXPECT_FALSE(p.str().empty());
}

// Provokes a CUDA API error on purpose (scripts/cuda_sanitize.sh leaves it out).
TEST_F(CudaContextTest, MissingDeviceIsAnError) {
  EXPECT_THROW(coat::cuda::DeviceProperties::query(9999), coat::CudaError);
  (void)cudaGetLastError();
}

TEST_F(CudaContextTest, StreamAndEventsOrderAndTimeWork) {
  coat::cuda::Stream stream;
  ASSERT_NE(stream.get(), nullptr);
  coat::cuda::Event start(coat::cuda::Event::Timing::Enabled);
  coat::cuda::Event end(coat::cuda::Event::Timing::Enabled);
  EXPECT_TRUE(start.timing_enabled());

  // Copy host -> device -> device -> host with the copies ordered on two streams by an event.
  constexpr size_t kBytes = size_t{8} << 20;
  void* a = nullptr;
  void* b = nullptr;
  COAT_CUDA_CHECK(cudaMalloc(&a, kBytes));
  COAT_CUDA_CHECK(cudaMalloc(&b, kBytes));
  std::string host(kBytes, 'x');
  for (size_t i = 0; i < kBytes; ++i) host[i] = static_cast<char>('a' + i % 23);
  start.record(stream);
  COAT_CUDA_CHECK(cudaMemcpyAsync(a, host.data(), kBytes, cudaMemcpyHostToDevice, stream.get()));
  coat::cuda::Event copied;
  copied.record(stream);
  coat::cuda::Stream other;
  other.wait(copied);
  COAT_CUDA_CHECK(cudaMemcpyAsync(b, a, kBytes, cudaMemcpyDeviceToDevice, other.get()));
  end.record(other);
  end.synchronize();
  EXPECT_TRUE(end.query());
  EXPECT_GE(coat::cuda::Event::elapsed_ms(start, end), 0.0f);
  std::string back(kBytes, '\0');
  COAT_CUDA_CHECK(cudaMemcpy(back.data(), b, kBytes, cudaMemcpyDeviceToHost));
  EXPECT_EQ(back, host);
  other.synchronize();
  COAT_CUDA_CHECK(cudaFree(a));
  COAT_CUDA_CHECK(cudaFree(b));

  // Events without timing cannot be timed.
  EXPECT_THROW(coat::cuda::Event::elapsed_ms(copied, end), coat::InvalidArgument);

  // Moves transfer ownership; the moved-from object holds nothing.
  cudaStream_t raw = stream.get();
  coat::cuda::Stream moved(std::move(stream));
  EXPECT_EQ(moved.get(), raw);
  EXPECT_EQ(stream.get(), nullptr);  // NOLINT(bugprone-use-after-move): checking the moved-from state
  coat::cuda::Event moved_event(std::move(end));
  EXPECT_EQ(end.get(), nullptr);  // NOLINT(bugprone-use-after-move)
  EXPECT_TRUE(moved_event.timing_enabled());
}

TEST_F(CudaContextTest, ContextOwnsStreamHandleWorkspaceAndPlans) {
  auto ctx = std::make_shared<coat::cuda::CudaContext>(0);
  EXPECT_EQ(ctx->device(), coat::Device::cuda(0));
  EXPECT_EQ(ctx->device_index(), 0);
  EXPECT_NE(ctx->stream(), nullptr);
  EXPECT_NE(ctx->cublaslt(), nullptr);
  ASSERT_NE(ctx->workspace(), nullptr);
  EXPECT_EQ(ctx->workspace_bytes(), size_t{32} << 20);
  EXPECT_EQ(ctx->properties().device, 0);
  EXPECT_EQ(ctx->properties().warp_size, 32);
  EXPECT_EQ(ctx->matmul_plans().plans_built(), 0u);
  const coat::MemoryReport report = ctx->allocator().memory_report();
  EXPECT_EQ(report.current(coat::MemoryCategory::Workspace), size_t{32} << 20);
  EXPECT_EQ(report.reserved_bytes, size_t{32} << 20);
  EXPECT_NO_THROW(ctx->make_current());
  EXPECT_NO_THROW(ctx->synchronize());

  // Tensors allocate from the context and keep it alive.
  coat::Tensor t = coat::Tensor::empty(ctx, {128, 256}, coat::DType::BF16, coat::MemoryCategory::Weights);
  EXPECT_TRUE(t.device().is_cuda());
  EXPECT_EQ(ctx->allocator().memory_report().current(coat::MemoryCategory::Weights), size_t{128 * 256 * 2});
  COAT_CUDA_CHECK(cudaMemsetAsync(t.data_ptr(), 0, t.nbytes(), ctx->stream()));
  ctx->synchronize();
  std::weak_ptr<coat::DeviceContext> weak = ctx;
  ctx.reset();
  EXPECT_FALSE(weak.expired());  // the tensor's storage still holds it
  t = coat::Tensor();
  EXPECT_TRUE(weak.expired());  // destroyed cleanly with the last tensor
}

TEST_F(CudaContextTest, TwoContextsOnOneDeviceAreIndependent) {
  coat::cuda::CudaContext first(0);
  coat::cuda::CudaContext second(0);
  EXPECT_NE(first.stream(), second.stream());
  EXPECT_NE(first.workspace(), second.workspace());
}

#else  // built without CUDA

TEST(CudaContextTest, Skipped) {
  GTEST_SKIP() << "built without CUDA";
}

#endif

}  // namespace
