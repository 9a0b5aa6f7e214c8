// cuda::matmul against the CPU backend (F32) and an FP64 reference (BF16, F16) on random non-zero inputs,
// all transpose combinations, odd shapes, alpha/beta; plus the plan cache and argument checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#ifdef COAT_WITH_CUDA
#include <cuda_runtime_api.h>

#include "coat/backend/cpu/gemm.h"
#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/cuda_context.h"
#include "coat/backend/cuda/device_properties.h"
#include "coat/backend/cuda/gemm.h"
#include "coat/core/context.h"
#include "coat/core/float_formats.h"
#include "coat/core/tensor.h"
#endif

namespace {

#ifdef COAT_WITH_CUDA

using coat::DType;
using coat::Shape;
using coat::Tensor;

class CudaGemmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (coat::cuda::device_count(&why) == 0) GTEST_SKIP() << "no CUDA device: " << why;
    cpu_ = std::make_shared<coat::CpuContext>();
    gpu_ = std::make_shared<coat::cuda::CudaContext>(0);
  }

  // Random values in [-1, -0.05] U [0.05, 1] (never zero), stored in `dtype` on the CPU.
  Tensor random_host(const Shape& shape, DType dtype, uint32_t seed) {
    Tensor t = Tensor::empty(cpu_, shape, dtype);
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> magnitude(0.05, 1.0);
    std::bernoulli_distribution negative(0.5);
    for (int64_t i = 0; i < t.numel(); ++i) set(t, i, negative(rng) ? -magnitude(rng) : magnitude(rng));
    return t;
  }

  Tensor to_gpu(const Tensor& host) {
    Tensor dev = Tensor::empty(gpu_, host.shape(), host.dtype());
    COAT_CUDA_CHECK(cudaMemcpy(dev.data_ptr(), host.data_ptr(), host.nbytes(), cudaMemcpyHostToDevice));
    // A pageable cudaMemcpy may return before its DMA lands, and it runs on the legacy stream, which does not
    // order with the context's non-blocking stream: wait for the whole device before queuing work.
    COAT_CUDA_CHECK(cudaDeviceSynchronize());
    return dev;
  }

  Tensor to_host(const Tensor& dev) {
    gpu_->synchronize();  // the matmul ran on the context's stream
    Tensor host = Tensor::empty(cpu_, dev.shape(), dev.dtype());
    COAT_CUDA_CHECK(cudaMemcpy(host.data_ptr(), dev.data_ptr(), dev.nbytes(), cudaMemcpyDeviceToHost));
    return host;
  }

  static double get(const Tensor& t, int64_t i) {
    switch (t.dtype()) {
      case DType::F32:
        return t.data<float>()[i];
      case DType::F64:
        return t.data<double>()[i];
      case DType::BF16:
        return coat::bf16_to_float(t.data<uint16_t>()[i]);
      case DType::F16:
        return coat::f16_to_float(t.data<uint16_t>()[i]);
      default:
        ADD_FAILURE() << "unexpected dtype";
        return 0.0;
    }
  }

  static void set(Tensor& t, int64_t i, double v) {
    switch (t.dtype()) {
      case DType::F32:
        t.data<float>()[i] = static_cast<float>(v);
        return;
      case DType::F64:
        t.data<double>()[i] = v;
        return;
      case DType::BF16:
        t.data<uint16_t>()[i] = coat::float_to_bf16(static_cast<float>(v));
        return;
      case DType::F16:
        t.data<uint16_t>()[i] = coat::float_to_f16(static_cast<float>(v));
        return;
      default:
        ADD_FAILURE() << "unexpected dtype";
        return;
    }
  }

  static std::vector<double> values(const Tensor& t) {
    std::vector<double> v(static_cast<size_t>(t.numel()));
    for (int64_t i = 0; i < t.numel(); ++i) v[i] = get(t, i);
    return v;
  }

  // alpha * op(a) @ op(b) + beta * c0 in FP64 from the stored (already rounded) input values.
  static std::vector<double> reference(const Tensor& a, const Tensor& b, bool ta, bool tb,
                                       const std::vector<double>& c0, double alpha, double beta) {
    const int64_t m = ta ? a.size(1) : a.size(0);
    const int64_t k = ta ? a.size(0) : a.size(1);
    const int64_t n = tb ? b.size(0) : b.size(1);
    const std::vector<double> av = values(a);
    const std::vector<double> bv = values(b);
    std::vector<double> out(static_cast<size_t>(m * n));
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double sum = 0.0;
        for (int64_t p = 0; p < k; ++p)
          sum += (ta ? av[p * m + i] : av[i * k + p]) * (tb ? bv[j * k + p] : bv[p * n + j]);
        out[i * n + j] = alpha * sum + (beta != 0.0 ? beta * c0[i * n + j] : 0.0);
      }
    }
    return out;
  }

  static double relative_l2(const std::vector<double>& got, const std::vector<double>& want) {
    double err = 0.0;
    double norm = 0.0;
    for (size_t i = 0; i < got.size(); ++i) {
      const double d = got[i] - want[i];
      err += d * d;
      norm += want[i] * want[i];
    }
    return std::sqrt(err / norm);
  }

  struct Case {
    int64_t m, n, k;
  };
  // Non-multiples of 16, M = 1, N = 1, K = 1 and a few larger shapes.
  static constexpr Case kCases[] = {{1, 1, 1},      {1, 64, 128},   {1, 37, 91},    {17, 33, 65},
                                    {64, 64, 64},   {5, 1, 7},      {31, 47, 1},    {128, 96, 200},
                                    {250, 130, 77}, {8, 512, 1024}, {256, 256, 512}};

  // For every case, transpose pair and (alpha, beta): run on the GPU and compare. With `versus_cpu` the
  // reference is cpu::matmul on the same inputs, otherwise the FP64 product of the stored inputs.
  void check(DType in, DType out_dtype, double tolerance, bool versus_cpu) {
    uint32_t seed = 77;
    double worst = 0.0;
    for (const Case& c : kCases) {
      for (int t = 0; t < 4; ++t) {
        const bool ta = (t & 1) != 0;
        const bool tb = (t & 2) != 0;
        for (const auto& [alpha, beta] : {std::pair{1.0f, 0.0f}, std::pair{-0.625f, 1.25f}}) {
          SCOPED_TRACE(testing::Message() << "M=" << c.m << " N=" << c.n << " K=" << c.k << " ta=" << ta
                                          << " tb=" << tb << " alpha=" << alpha << " beta=" << beta);
          Tensor a = random_host(ta ? Shape{c.k, c.m} : Shape{c.m, c.k}, in, seed++);
          Tensor b = random_host(tb ? Shape{c.n, c.k} : Shape{c.k, c.n}, in, seed++);
          Tensor c0 = random_host({c.m, c.n}, out_dtype, seed++);
          Tensor out_gpu = to_gpu(c0);
          coat::cuda::matmul(to_gpu(a), to_gpu(b), ta, tb, out_gpu, alpha, beta);
          const std::vector<double> got = values(to_host(out_gpu));
          std::vector<double> want;
          if (versus_cpu) {
            coat::cpu::matmul(a, b, ta, tb, c0, alpha, beta);
            want = values(c0);
          } else {
            want = reference(a, b, ta, tb, values(c0), alpha, beta);
          }
          const double err = relative_l2(got, want);
          worst = std::max(worst, err);
          EXPECT_LE(err, tolerance);
        }
      }
    }
    std::printf("[          ] worst relative L2 error %.3g (tolerance %.3g)\n", worst, tolerance);
  }

  std::shared_ptr<coat::CpuContext> cpu_;
  std::shared_ptr<coat::cuda::CudaContext> gpu_;
};

// F32: both sides multiply exactly-representable FP32 inputs with FP32 products and FP32 accumulation
// (CUBLAS_COMPUTE_32F, no TF32), differing only in summation order. For K <= 1024 random-sign terms each
// side's error is ~sqrt(K) * 2^-24 ~ 2e-6 of the result; 1e-5 has margin, while TF32 (10-bit mantissa,
// ~5e-4) or a wrong term (~1e-2 and more) fail clearly.
TEST_F(CudaGemmTest, F32MatchesCpu) {
  check(DType::F32, DType::F32, 1e-5, /*versus_cpu=*/true);
}

// BF16 -> BF16 against the FP64 product of the bf16 inputs: products of two bf16 values are exact in FP32 and
// accumulate in FP32 (error ~1e-6 as above); the one rounding of the result to bf16 (8 significant bits)
// moves each element by at most 2^-8 of itself, so the relative L2 error is <= 2^-8 ~ 3.9e-3 (typically
// ~1.5e-3). The bound 1e-2 leaves room for the tensor cores' internal accumulation; a wrong layout or
// transpose gives errors of order 1.
TEST_F(CudaGemmTest, Bf16MatchesFp64Reference) {
  check(DType::BF16, DType::BF16, 1e-2, false);
}

// BF16 -> F32: no final 16-bit rounding, so only the FP32 accumulation error (~1e-6) remains.
TEST_F(CudaGemmTest, Bf16ToF32MatchesFp64Reference) {
  check(DType::BF16, DType::F32, 1e-4, false);
}

// F16 -> F16: final rounding <= 2^-11 ~ 4.9e-4 of each element (5x room); F16 -> F32 as for BF16.
TEST_F(CudaGemmTest, F16MatchesFp64Reference) {
  check(DType::F16, DType::F16, 2.5e-3, false);
}
TEST_F(CudaGemmTest, F16ToF32MatchesFp64Reference) {
  check(DType::F16, DType::F32, 1e-4, false);
}

TEST_F(CudaGemmTest, BetaZeroIgnoresNanInOut) {
  for (DType dtype : {DType::F32, DType::BF16}) {
    Tensor a = random_host({40, 24}, dtype, 1);
    Tensor b = random_host({24, 48}, dtype, 2);
    Tensor nan_out = Tensor::empty(cpu_, {40, 48}, dtype);
    for (int64_t i = 0; i < nan_out.numel(); ++i) set(nan_out, i, std::numeric_limits<double>::quiet_NaN());
    Tensor out = to_gpu(nan_out);
    coat::cuda::matmul(to_gpu(a), to_gpu(b), false, false, out, 1.0f, 0.0f);
    const std::vector<double> got = values(to_host(out));
    for (double v : got) ASSERT_TRUE(std::isfinite(v));
    EXPECT_LE(relative_l2(got, reference(a, b, false, false, {}, 1.0, 0.0)), 1e-2);
  }
}

TEST_F(CudaGemmTest, PlanCacheBuildsOncePerProblem) {
  coat::cuda::MatmulPlanCache& plans = gpu_->matmul_plans();
  Tensor a = to_gpu(random_host({48, 80}, DType::BF16, 5));
  Tensor b = to_gpu(random_host({80, 24}, DType::BF16, 6));
  Tensor out = Tensor::empty(gpu_, {48, 24}, DType::BF16);
  const uint64_t before = plans.plans_built();
  coat::cuda::matmul(a, b, false, false, out);
  EXPECT_EQ(plans.plans_built(), before + 1);
  coat::cuda::matmul(a, b, false, false, out);              // identical problem: nothing built
  coat::cuda::matmul(a, b, false, false, out, 2.0f, 0.0f);  // alpha does not change the plan
  EXPECT_EQ(plans.plans_built(), before + 1);
  coat::cuda::matmul(a, b, false, false, out, 1.0f, 1.0f);  // beta != 0 is another key
  EXPECT_EQ(plans.plans_built(), before + 2);
  Tensor out_f32 = Tensor::empty(gpu_, {48, 24}, DType::F32);
  coat::cuda::matmul(a, b, false, false, out_f32);  // another output type
  EXPECT_EQ(plans.plans_built(), before + 3);
  Tensor bt = to_gpu(random_host({24, 80}, DType::BF16, 7));
  coat::cuda::matmul(a, bt, false, true, out);  // another transpose
  coat::cuda::matmul(a, bt, false, true, out);
  EXPECT_EQ(plans.plans_built(), before + 4);
  EXPECT_EQ(plans.size(), before + 4);
  gpu_->synchronize();
}

TEST_F(CudaGemmTest, ViewsAtUnalignedOffsetsWork) {
  // Operands that start 2 and 16 bytes into an allocation: the plan must not assume 256-byte alignment.
  for (int64_t offset : {1, 8}) {
    SCOPED_TRACE(testing::Message() << "element offset " << offset);
    Tensor a_host = random_host({33, 40}, DType::BF16, 11);
    Tensor b_host = random_host({40, 20}, DType::BF16, 12);
    auto storage = std::make_shared<coat::Storage>(gpu_, size_t(2 * (offset + 33 * 40 + offset + 40 * 20)),
                                                   coat::MemoryCategory::Activations);
    Tensor a = Tensor::from_storage(storage, {33, 40}, DType::BF16, offset);
    Tensor b = Tensor::from_storage(storage, {40, 20}, DType::BF16, 2 * offset + 33 * 40);
    COAT_CUDA_CHECK(cudaMemcpy(a.data_ptr(), a_host.data_ptr(), a_host.nbytes(), cudaMemcpyHostToDevice));
    COAT_CUDA_CHECK(cudaMemcpy(b.data_ptr(), b_host.data_ptr(), b_host.nbytes(), cudaMemcpyHostToDevice));
    COAT_CUDA_CHECK(cudaDeviceSynchronize());
    Tensor out = Tensor::empty(gpu_, {33, 20}, DType::F32);
    coat::cuda::matmul(a, b, false, false, out);
    EXPECT_LE(relative_l2(values(to_host(out)), reference(a_host, b_host, false, false, {}, 1.0, 0.0)), 1e-4);
  }
}

TEST_F(CudaGemmTest, EmptyInnerDimension) {
  Tensor a = Tensor::empty(gpu_, {3, 0}, DType::F32);
  Tensor b = Tensor::empty(gpu_, {0, 5}, DType::F32);
  Tensor out = to_gpu(random_host({3, 5}, DType::F32, 3));
  coat::cuda::matmul(a, b, false, false, out, 1.0f, 1.0f);  // out unchanged
  coat::cuda::matmul(a, b, false, false, out, 1.0f, 0.0f);  // out = 0
  for (double v : values(to_host(out))) EXPECT_EQ(v, 0.0);
  EXPECT_THROW(coat::cuda::matmul(a, b, false, false, out, 1.0f, 0.5f), coat::NotImplemented);
}

TEST_F(CudaGemmTest, RejectsBadArguments) {
  Tensor a = to_gpu(random_host({3, 4}, DType::F32, 1));
  Tensor b = to_gpu(random_host({5, 6}, DType::F32, 2));
  Tensor out = Tensor::empty(gpu_, {3, 6}, DType::F32);
  try {
    coat::cuda::matmul(a, b, false, false, out);
    FAIL() << "expected InvalidArgument";
  } catch (const coat::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("[matmul] shapes (3,4) and (5,6) do not match"), std::string::npos)
        << e.what();
  }
  Tensor b2 = to_gpu(random_host({4, 6}, DType::F32, 3));
  Tensor wrong_out = Tensor::empty(gpu_, {6, 3}, DType::F32);
  EXPECT_THROW(coat::cuda::matmul(a, b2, false, false, wrong_out), coat::InvalidArgument);
  Tensor out_f64 = Tensor::empty(gpu_, {3, 6}, DType::F64);
  EXPECT_THROW(coat::cuda::matmul(a, b2, false, false, out_f64), coat::NotImplemented);
  Tensor b_bf16 = to_gpu(random_host({4, 6}, DType::BF16, 4));
  EXPECT_THROW(coat::cuda::matmul(a, b_bf16, false, false, out), coat::InvalidArgument);
  Tensor host_out = Tensor::empty(cpu_, {3, 6}, DType::F32);
  EXPECT_THROW(coat::cuda::matmul(a, b2, false, false, host_out), coat::InvalidArgument);
  Tensor not_contiguous = to_gpu(random_host({6, 4}, DType::F32, 6)).transpose(0, 1);
  EXPECT_THROW(coat::cuda::matmul(a, not_contiguous, false, false, out), coat::InvalidArgument);
}

#else  // built without CUDA

TEST(CudaGemmTest, Skipped) {
  GTEST_SKIP() << "built without CUDA";
}

#endif

}  // namespace
