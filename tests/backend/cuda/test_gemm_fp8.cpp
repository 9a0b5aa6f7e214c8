// ops::matmul_fp8 on CUDA (cuBLASLt FP8) against an FP64 reference computed from the decoded codes: every
// allowed format pair, with and without fast accumulation, BF16 and F32 output, two shapes; scales read
// through device pointers; accumulate mode; the plan cache. Skips without a GPU (and below sm_89).
//
// Tolerances (relative Frobenius error ||out - ref|| / ||ref||, ref = (sa*sb) * sum of exact products, in
// double, unrounded):
// - F32 output, precise accumulation: 5e-4. FP32 sums alone would give ~2^-24 sqrt(K/2) (~1.3e-6 at
//   K = 1024), but Hopper's FP8 tensor cores add the products of each k-block in an accumulator that keeps
//   only about 14 bits; without fast accumulation cuBLASLt promotes those partial sums to FP32 every few
//   k-blocks (DeepSeek-V3 report, section 3.3.2). Each promoted partial sum thus carries ~2^-13 relative
//   error, independent of K: measured on an H100, 1.05e-4 .. 1.29e-4 at K = 384 and 1024 (an earlier
//   bound of 1e-5, which assumed FP32 accumulation, failed there). 5e-4 is four times that; fast accumulation
//   measured about twice as much (2.2e-4 .. 2.8e-4).
// - BF16 output, precise accumulation: 5e-3. Dominated by the one final rounding to bf16, at most 2^-9
//   relative per element (rms about 2^-9/sqrt(3) = 1.1e-3).
// - F32 output, fast accumulation: 2e-3. With CUBLASLT_MATMUL_DESC_FAST_ACCUM Hopper keeps the whole sum
//   in the tensor cores' accumulator, which retains only about 14 bits (DeepSeek-V3 report, section 3.3.2:
//   ~2^-14 per addition; up to ~2% on single elements at K = 4096 in their measurement). For K <= 1024
//   that is ~K/32 accumulator updates of <= 2^-14 each relative to the running sum: a few 1e-4 when the
//   errors are random (measured 2.2e-4 .. 2.8e-4), under 2e-3 even if they all had one sign. (This is why
//   COAT uses fast accumulation only in the forward pass.)
// - BF16 output, fast accumulation: 8e-3 (the two above together).
// The measured errors are printed, so a GPU run records how far from the bounds they are.
#include <gtest/gtest.h>

#include "cuda_test_util.h"
#include "expect_error.h"
#include "fp8_reference.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/matmul_fp8.h"
#include "coat/ops/quantize.h"

#ifdef COAT_WITH_CUDA
#include <cuda_runtime_api.h>

#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/cuda_context.h"
#endif

namespace coat {
namespace {

#ifdef COAT_WITH_CUDA

class CudaGemmFp8 : public test::CudaTest {
 protected:
  void SetUp() override {
    test::CudaTest::SetUp();
    if (IsSkipped()) return;
    const auto& props = ctx().properties();
    if (props.compute_capability() < 89)
      GTEST_SKIP() << "FP8 GEMMs need compute capability 8.9+, device has " << props.compute_capability();
  }

  cuda::CudaContext& ctx() { return static_cast<cuda::CudaContext&>(*gpu); }

  // Random non-zero values (normal with |x| >= 1e-3, both signs) in F32 on the GPU, quantized per tensor.
  ops::Fp8PerTensor random_fp8(int64_t rows, int64_t cols, DType fmt, uint32_t seed) {
    return ops::quantize_per_tensor(random_gpu(rows, cols, DType::F32, seed), fmt);
  }

  Tensor random_gpu(int64_t rows, int64_t cols, DType dtype, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> v(static_cast<size_t>(rows * cols));
    for (float& x : v) {
      x = normal(rng);
      if (std::fabs(x) < 1e-3f) x = x < 0.0f ? -1e-3f : 1e-3f;
    }
    return ops::to(ops::from_vector(cpu, {rows, cols}, dtype, v), gpu);
  }

  struct Decoded {
    std::vector<double> values;
    double scale_inv = 0.0;
  };

  Decoded decode(const ops::Fp8PerTensor& q) {
    return {test::decode_fp8(ops::to(q.codes, cpu)), ops::to(q.scale_inv, cpu).data<float>()[0]};
  }

  // (sa * sb) * A @ B^T in double (exact products, double sums), unrounded; plus c when given.
  static std::vector<double> reference(const Decoded& a, const Decoded& b, int64_t m, int64_t n, int64_t k,
                                       const std::vector<double>* c = nullptr) {
    return test::matmul_nt_reference(a.values, b.values, m, n, k, a.scale_inv * b.scale_inv, c);
  }

  static double bound(DType out_dtype, bool fast_accum) {
    if (out_dtype == DType::F32) return fast_accum ? 2e-3 : 5e-4;
    return fast_accum ? 8e-3 : 5e-3;
  }
};

TEST_F(CudaGemmFp8, AllPairsMatchFp64Reference) {
  struct Mnk {
    int64_t m, n, k;
  };
  const Mnk shapes[] = {{256, 512, 384}, {512, 1024, 1024}, {40, 48, 64}};  // the last one: M not a tile multiple
  uint32_t seed = 1;
  for (const Mnk& s : shapes) {
    for (const test::Fp8Pair& p : test::kFp8Pairs) {
      const ops::Fp8PerTensor a = random_fp8(s.m, s.k, p.a, seed++);
      const ops::Fp8PerTensor b = random_fp8(s.n, s.k, p.b, seed++);
      const std::vector<double> ref = reference(decode(a), decode(b), s.m, s.n, s.k);
      for (bool fast : {false, true}) {
        for (DType od : {DType::BF16, DType::F32}) {
          const std::string what = test::fp8_gemm_label(p, od, s.m, s.n, s.k, fast);
          const Tensor out = ops::matmul_fp8(a, b, od, fast);
          ASSERT_EQ(out.shape(), Shape({s.m, s.n})) << what;
          const double err = test::rel_frobenius(ops::to_double_vector(out), ref);
          std::printf("[matmul_fp8] %-48s rel. Frobenius error %.3e (bound %.0e)\n", what.c_str(), err,
                      bound(od, fast));
          EXPECT_LE(err, bound(od, fast)) << what;
        }
      }
    }
  }
}

TEST_F(CudaGemmFp8, ScalesAreReadThroughDevicePointers) {
  const int64_t m = 256, n = 512, k = 384;
  const ops::Fp8PerTensor a = random_fp8(m, k, DType::E4M3, 41);
  const ops::Fp8PerTensor b = random_fp8(n, k, DType::E4M3, 42);
  Tensor out = Tensor::empty(gpu, {m, n}, DType::F32);
  ops::matmul_fp8(a, b, out);  // builds (or finds) the plan
  const std::vector<double> first = ops::to_double_vector(out);

  // Change a's dequantisation factor on the device, on the stream, with no host synchronisation between the
  // write and the next matmul: the plan is reused and the GPU must read the new value (a cached host value
  // or a host-side read would give the old result). Doubling is exact, so the result doubles bit for bit.
  cuda::MatmulPlanCache& plans = ctx().matmul_plans();
  const uint64_t built = plans.plans_built();
  const float new_scale = 2.0f * ops::to(a.scale_inv, cpu).data<float>()[0];
  COAT_CUDA_CHECK(cudaMemcpyAsync(a.scale_inv.data_ptr(), &new_scale, sizeof(float), cudaMemcpyHostToDevice,
                                  ctx().stream()));
  ops::matmul_fp8(a, b, out);
  const std::vector<double> second = ops::to_double_vector(out);
  EXPECT_EQ(plans.plans_built(), built) << "the second call must reuse the cached plan";
  int64_t mismatches = 0;
  for (size_t i = 0; i < first.size(); ++i) mismatches += second[i] != 2.0 * first[i] ? 1 : 0;
  EXPECT_EQ(mismatches, 0) << "the result did not follow the scale written on the device";

  // Another scale tensor with the same plan: each call passes its own pointers.
  ops::Fp8PerTensor b2 = b;
  b2.scale_inv = ops::full(gpu, {1}, 0.1875, DType::F32);
  ops::matmul_fp8(a, b2, out);
  EXPECT_EQ(plans.plans_built(), built);
  const std::vector<double> ref = reference(decode(a), decode(b2), m, n, k);
  EXPECT_LE(test::rel_frobenius(ops::to_double_vector(out), ref), bound(DType::F32, false));
}

TEST_F(CudaGemmFp8, AccumulateAddsToOut) {
  const int64_t m = 256, n = 512, k = 384;
  uint32_t seed = 60;
  for (const test::Fp8Pair& p : test::kFp8Pairs) {
    const ops::Fp8PerTensor a = random_fp8(m, k, p.a, seed++);
    const ops::Fp8PerTensor b = random_fp8(n, k, p.b, seed++);
    const Decoded da = decode(a), db = decode(b);
    for (DType od : {DType::BF16, DType::F32}) {
      for (bool fast : {false, true}) {
        const Tensor c = random_gpu(m, n, od, seed++);
        const std::vector<double> c_values = ops::to_double_vector(c);
        Tensor out = ops::clone(c);
        ops::matmul_fp8(a, b, out, /*accumulate=*/true, fast);
        const std::vector<double> ref = reference(da, db, m, n, k, &c_values);
        const double err = test::rel_frobenius(ops::to_double_vector(out), ref);
        const std::string what = "accumulate " + test::fp8_gemm_label(p, od, m, n, k, fast);
        std::printf("[matmul_fp8] %-59s rel. Frobenius error %.3e\n", what.c_str(), err);
        EXPECT_LE(err, bound(od, fast)) << what;
      }
    }
  }
}

TEST_F(CudaGemmFp8, PlansCachedPerShapeAndFastAccum) {
  const ops::Fp8PerTensor a = random_fp8(48, 80, DType::E4M3, 71);
  const ops::Fp8PerTensor b = random_fp8(32, 80, DType::E5M2, 72);
  cuda::MatmulPlanCache& plans = ctx().matmul_plans();
  Tensor out = Tensor::empty(gpu, {48, 32}, DType::BF16);
  const uint64_t before = plans.plans_built();
  ops::matmul_fp8(a, b, out);
  ops::matmul_fp8(a, b, out);
  EXPECT_EQ(plans.plans_built(), before + 1);
  ops::matmul_fp8(a, b, out, false, /*fast_accum=*/true);
  ops::matmul_fp8(a, b, out, false, /*fast_accum=*/true);
  EXPECT_EQ(plans.plans_built(), before + 2);
  ops::matmul_fp8(a, b, out, /*accumulate=*/true);  // beta != 0: another plan
  EXPECT_EQ(plans.plans_built(), before + 3);
  gpu->synchronize();
}

TEST_F(CudaGemmFp8, Errors) {
  const ops::Fp8PerTensor a5 = random_fp8(16, 32, DType::E5M2, 81);
  const ops::Fp8PerTensor b5 = random_fp8(16, 32, DType::E5M2, 82);
  test::expect_error_containing([&] { ops::matmul_fp8(a5, b5); }, "both e5m2");
  const ops::Fp8PerTensor b_cpu{ops::to(b5.codes, cpu), ops::to(b5.scale, cpu), ops::to(b5.scale_inv, cpu),
                                Tensor()};
  test::expect_error_containing([&] { ops::matmul_fp8(a5, b_cpu); }, "different contexts");
  const ops::Fp8PerTensor bn = random_fp8(24, 32, DType::E4M3, 83);
  test::expect_error_containing([&] { ops::matmul_fp8(a5, bn); }, "N = 24");
}

#else

TEST(CudaGemmFp8, NotBuilt) {
  GTEST_SKIP() << "built without CUDA";
}

#endif  // COAT_WITH_CUDA

}  // namespace
}  // namespace coat
