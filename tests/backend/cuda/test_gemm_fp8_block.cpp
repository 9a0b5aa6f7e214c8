// ops::matmul_fp8_block on CUDA (cuBLASLt's VEC128_32F x BLK128x128_32F block scale modes, and VEC128_32F x
// VEC128_32F for a 1x128-quantized b: a weight gradient's product) against the CPU reference
// (ops::matmul_fp8_block on the CPU, FP64 inside): every allowed format pair, BF16 and F32 output, several
// shapes, operands quantized on the GPU with scales that differ per block; hand-built cases whose exact result
// depends on every scale entry being read from the documented layout (the padding entries hold NaN, so reading
// one shows); scales read through device pointers; accumulate mode; the plan cache. Skips without a GPU, and
// off Hopper (cuBLASLt runs these scale modes on compute capability 9.0 only). The 1x128 x 1x128 product has
// the same bounds: the same per-block accumulation, only b's scale varies per row instead of per 128 rows.
//
// Tolerances (relative Frobenius error ||out - ref|| / ||ref||, ref from the FP64 CPU reference):
// - F32 output: 1e-3. The products of two FP8 codes are exact; cuBLASLt sums each 128-wide K block in the
//   tensor cores, scales the block sum by sa * sb and adds it to an FP32 accumulator (the DeepSeek-V3
//   scheme). On Hopper the in-block FP8 accumulation keeps only about 14 bits (DeepSeek-V3 report, 3.3.2),
//   i.e. <= 2^-14 relative per update, and a 128-wide block takes 4 updates of K = 32: <= 4 * 2^-14 = 2.4e-4
//   relative to the block sums, whose norm for random signs is that of the result. The FP32 additions over
//   the K/128 blocks (2^-24 each) and the rounding of the scale products are negligible beside it; 1e-3
//   leaves a factor 4 for the block sums being larger than the result.
// - BF16 output: 5e-3. The same plus the one final rounding to bf16, at most 2^-8 relative per element
//   (bf16 keeps 8 significant bits), so at most 2^-8 = 3.9e-3 in the Frobenius ratio.
// The hand-built case has small integer-valued block sums, exact in every format involved: exact equality.
// The measured errors are printed, so a GPU run records how far from the bounds they are.
#include <gtest/gtest.h>

#include "cuda_test_util.h"
#include "expect_error.h"
#include "fp8_reference.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/matmul_fp8.h"
#include "coat/ops/matmul_fp8_block.h"
#include "coat/ops/quantize.h"
#include "coat/ops/quantize_block.h"

#ifdef COAT_WITH_CUDA
#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/cuda_context.h"
#endif

namespace coat {
namespace {

#ifdef COAT_WITH_CUDA

constexpr double kBoundF32 = 1e-3;
constexpr double kBoundBf16 = 5e-3;

double bound(DType out) {
  return out == DType::F32 ? kBoundF32 : kBoundBf16;
}

bool is_hopper(cuda::CudaContext& ctx) {
  return ctx.properties().compute_capability_major == 9;
}

class CudaGemmFp8Block : public test::CudaTest {
 protected:
  void SetUp() override {
    test::CudaTest::SetUp();
    if (IsSkipped()) return;
    if (CUBLAS_VERSION < 120900) GTEST_SKIP() << "cuBLAS " << CUBLAS_VERSION << " has no 128-block scale modes (12.9+)";
    if (!is_hopper(ctx()))
      GTEST_SKIP() << "cuBLASLt runs the VEC128_32F / BLK128x128_32F scale modes on compute capability 9.0 only; "
                   << "device has " << ctx().properties().compute_capability();
  }

  cuda::CudaContext& ctx() { return static_cast<cuda::CudaContext&>(*gpu); }

  // Random non-zero normal values (|x| >= 1e-3, both signs) times 2^f with f differing per row and per 128
  // columns (f in -3 .. 3), so that every group and block has its own scale; on the GPU.
  Tensor random_gpu(int64_t rows, int64_t cols, DType dtype, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::vector<double> v(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        double x = normal(rng);
        if (std::fabs(x) < 1e-3) x = x < 0.0 ? -1e-3 : 1e-3;
        const double f = static_cast<double>((r % 5 + 2 * (c / 128)) % 7) - 3.0;
        v[static_cast<size_t>(r * cols + c)] = x * std::exp2(f);
      }
    }
    return ops::to(ops::from_vector(cpu, {rows, cols}, dtype, v), gpu);
  }

  // a b^T into BF16 and into F32 against the CPU reference `ref` (of [m, k] and [n, k] operands), each
  // within bound(od); the label starts with `prefix`.
  void expect_outputs_match(const ops::Fp8Blocked& a, const ops::Fp8Blocked& b, const std::vector<double>& ref,
                            const std::string& prefix, const test::Fp8Pair& p, int64_t m, int64_t n, int64_t k) {
    for (DType od : {DType::BF16, DType::F32}) {
      const std::string what = prefix + test::fp8_gemm_label(p, od, m, n, k);
      const Tensor out = ops::matmul_fp8_block(a, b, od);
      ASSERT_EQ(out.shape(), Shape({m, n})) << what;
      const double err = test::rel_frobenius(ops::to_double_vector(out), ref);
      std::printf("[matmul_fp8_block] %-50s rel. Frobenius error %.3e (bound %.0e)\n", what.c_str(), err,
                  bound(od));
      EXPECT_LE(err, bound(od)) << what;
    }
  }

  ops::Fp8Blocked to_cpu(const ops::Fp8Blocked& q) {
    return {ops::to(q.codes, cpu), ops::to(q.scale_inv, cpu), q.block_rows, q.block_cols};
  }

  // The CPU reference (FP64 inside, rounded to f32 at the end: 2^-24, negligible beside the bounds).
  std::vector<double> reference(const ops::Fp8Blocked& a, const ops::Fp8Blocked& b) {
    return ops::to_double_vector(ops::matmul_fp8_block(to_cpu(a), to_cpu(b), DType::F32));
  }
};

TEST_F(CudaGemmFp8Block, AllPairsMatchCpuReference) {
  struct Mnk {
    int64_t m, n, k;
  };
  // The last two: M not a multiple of a tile (only of 4), and the smallest problem.
  const Mnk shapes[] = {{256, 512, 384}, {512, 1024, 1024}, {132, 384, 256}, {4, 128, 128}};
  uint32_t seed = 1;
  for (const Mnk& s : shapes) {
    for (const test::Fp8Pair& p : test::kFp8Pairs) {
      const ops::Fp8Blocked a = ops::quantize_1x128(random_gpu(s.m, s.k, DType::BF16, seed++), p.a);
      const ops::Fp8Blocked b = ops::quantize_128x128(random_gpu(s.n, s.k, DType::F32, seed++), p.b);
      expect_outputs_match(a, b, reference(a, b), "", p, s.m, s.n, s.k);
      if (HasFatalFailure()) return;
    }
  }
}

TEST_F(CudaGemmFp8Block, RowwiseBAllPairsMatchCpuReference) {
  struct Mnk {
    int64_t m, n, k;
  };
  // A weight gradient's shapes (M = out, N = in, K = tokens) and the smallest: with 1x128 groups on both operands
  // cuBLASLt runs M and N multiples of 128 (it refused M = 132; ops::matmul_fp8_block checks it).
  const Mnk shapes[] = {{256, 384, 512}, {512, 1024, 1024}, {384, 128, 256}, {128, 128, 128}};
  uint32_t seed = 500;
  for (const Mnk& s : shapes) {
    for (const test::Fp8Pair& p : test::kFp8Pairs) {
      const ops::Fp8Blocked a = ops::quantize_1x128(random_gpu(s.m, s.k, DType::BF16, seed++), p.a);
      const ops::Fp8Blocked b = ops::quantize_1x128(random_gpu(s.n, s.k, DType::BF16, seed++), p.b);
      const std::vector<double> ref = reference(a, b);
      expect_outputs_match(a, b, ref, "1x128 b ", p, s.m, s.n, s.k);
      if (HasFatalFailure()) return;
      // Accumulating into an F32 gradient (what nn::linear_fp8_block's wgrad does).
      const Tensor c = random_gpu(s.m, s.n, DType::F32, seed++);
      std::vector<double> want = ops::to_double_vector(c);
      for (size_t i = 0; i < want.size(); ++i) want[i] += ref[i];
      Tensor acc = ops::clone(c);
      ops::matmul_fp8_block(a, b, acc, /*accumulate=*/true);
      EXPECT_LE(test::rel_frobenius(ops::to_double_vector(acc), want), kBoundF32);
    }
  }
}

TEST_F(CudaGemmFp8Block, RowwiseBHandBuiltScalesFollowTheLayout) {
  // M = 128, N = 128, K = 384, both 1x128. Codes: a all 1.0, b all 0.5. Scales: a (m, kb) = 1 + m + 128 kb at
  // kb * 128 + m (all distinct), b (n, kb) = 1 + n % 16 + 16 kb at kb * 128 + n (distinct per kb and n % 16), so reading any entry from another place
  // (e.g. b's scales as a 128x128 layout) changes the result. out[m, n] = sum_kb 64 sa(m, kb) sb(n, kb): exact.
  const int64_t m = 128, n = 128, k = 384, kb_count = 3;
  Tensor ac = Tensor::empty(cpu, {m, k}, DType::E4M3), bc = Tensor::empty(cpu, {n, k}, DType::E4M3);
  std::memset(ac.data_ptr(), 0x38, ac.nbytes());
  std::memset(bc.data_ptr(), 0x30, bc.nbytes());
  Tensor sa = Tensor::empty(cpu, {kb_count, m}, DType::F32), sb = Tensor::empty(cpu, {kb_count, n}, DType::F32);
  for (int64_t kb = 0; kb < kb_count; ++kb) {
    for (int64_t i = 0; i < m; ++i) sa.data<float>()[kb * m + i] = static_cast<float>(1 + i + 128 * kb);
    for (int64_t j = 0; j < n; ++j) sb.data<float>()[kb * n + j] = static_cast<float>(1 + j % 16 + 16 * kb);
  }
  const ops::Fp8Blocked a{ops::to(ac, gpu), ops::to(sa, gpu), 1, 128};
  const ops::Fp8Blocked b{ops::to(bc, gpu), ops::to(sb, gpu), 1, 128};
  const std::vector<double> got = ops::to_double_vector(ops::matmul_fp8_block(a, b, DType::F32));
  int64_t mismatches = 0;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double want = 0.0;
      for (int64_t kb = 0; kb < kb_count; ++kb)
        want += 64.0 * static_cast<double>((1 + i + 128 * kb) * (1 + j % 16 + 16 * kb));
      const double g = got[static_cast<size_t>(i * n + j)];
      if (g != want && ++mismatches <= 5) ADD_FAILURE() << "out[" << i << "," << j << "] = " << g << ", want " << want;
    }
  }
  EXPECT_EQ(mismatches, 0) << "cuBLASLt did not read b's 1x128 scales where block_scale_layout.h puts them";
}

TEST_F(CudaGemmFp8Block, HandBuiltScalesFollowTheLayout) {
  // M = 8, N = 256, K = 384 (3 K blocks, b's scale rows padded to 4). Codes: a all 1.0, b all 0.5. Scales:
  // a (m, kb) = 1 + m + 8 kb, b (nb, kb) = 1 + nb + 2 kb, all distinct, so reading any entry from another
  // place changes the result; b's padding entries are NaN, so reading one makes the result NaN.
  // out[m, n] = sum_kb 128 * 0.5 * sa(m, kb) * sb(n / 128, kb): integers below 2^15, every step exact in f32.
  const int64_t m = 8, n = 256, k = 384, kb_count = 3, ld_b = 4;
  Tensor ac = Tensor::empty(cpu, {m, k}, DType::E4M3), bc = Tensor::empty(cpu, {n, k}, DType::E4M3);
  std::memset(ac.data_ptr(), 0x38, ac.nbytes());
  std::memset(bc.data_ptr(), 0x30, bc.nbytes());
  Tensor sa = Tensor::empty(cpu, {kb_count, m}, DType::F32), sb = Tensor::empty(cpu, {n / 128, ld_b}, DType::F32);
  for (int64_t kb = 0; kb < kb_count; ++kb)
    for (int64_t i = 0; i < m; ++i) sa.data<float>()[kb * m + i] = static_cast<float>(1 + i + 8 * kb);
  for (int64_t nb = 0; nb < n / 128; ++nb) {
    for (int64_t kb = 0; kb < ld_b; ++kb)
      sb.data<float>()[nb * ld_b + kb] = kb < kb_count ? static_cast<float>(1 + nb + 2 * kb) : std::nanf("");
  }
  const ops::Fp8Blocked a{ops::to(ac, gpu), ops::to(sa, gpu), 1, 128};
  const ops::Fp8Blocked b{ops::to(bc, gpu), ops::to(sb, gpu), 128, 128};
  const std::vector<double> got = ops::to_double_vector(ops::matmul_fp8_block(a, b, DType::F32));
  int64_t mismatches = 0;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double want = 0.0;
      for (int64_t kb = 0; kb < kb_count; ++kb)
        want += 64.0 * static_cast<double>((1 + i + 8 * kb) * (1 + j / 128 + 2 * kb));
      const double g = got[static_cast<size_t>(i * n + j)];
      if (g != want && ++mismatches <= 5) ADD_FAILURE() << "out[" << i << "," << j << "] = " << g << ", want " << want;
    }
  }
  EXPECT_EQ(mismatches, 0) << "cuBLASLt did not read the scales where block_scale_layout.h puts them";
}

TEST_F(CudaGemmFp8Block, ScalesAreReadThroughDevicePointers) {
  const int64_t m = 256, n = 512, k = 384;
  const ops::Fp8Blocked a = ops::quantize_1x128(random_gpu(m, k, DType::F32, 41), DType::E4M3);
  const ops::Fp8Blocked b = ops::quantize_128x128(random_gpu(n, k, DType::F32, 42), DType::E4M3);
  Tensor out = Tensor::empty(gpu, {m, n}, DType::F32);
  ops::matmul_fp8_block(a, b, out);  // builds (or finds) the plan
  const std::vector<double> first = ops::to_double_vector(out);

  // Double the scale of a's group (row 5, K block 1) on the device, on the stream, with no host
  // synchronisation before the next matmul: the cached plan is reused and the GPU must read the new value.
  cuda::MatmulPlanCache& plans = ctx().matmul_plans();
  const uint64_t built = plans.plans_built();
  const int64_t index = 1 * m + 5;  // kb * ld + m, ld = M
  const float new_scale = 2.0f * ops::to(a.scale_inv, cpu).data<float>()[index];
  COAT_CUDA_CHECK(cudaMemcpyAsync(static_cast<float*>(a.scale_inv.data_ptr()) + index, &new_scale, sizeof(float),
                                  cudaMemcpyHostToDevice, ctx().stream()));
  ops::matmul_fp8_block(a, b, out);
  const std::vector<double> second = ops::to_double_vector(out);
  EXPECT_EQ(plans.plans_built(), built) << "the second call must reuse the cached plan";
  int64_t changed_elsewhere = 0, changed_in_row = 0;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const size_t idx = static_cast<size_t>(i * n + j);
      if (i == 5) {
        changed_in_row += second[idx] != first[idx] ? 1 : 0;
      } else {
        changed_elsewhere += second[idx] != first[idx] ? 1 : 0;
      }
    }
  }
  EXPECT_EQ(changed_elsewhere, 0) << "only row 5 depends on the changed scale";
  EXPECT_GT(changed_in_row, n / 2) << "row 5 did not follow the scale written on the device";
  EXPECT_LE(test::rel_frobenius(second, reference(a, b)), kBoundF32);

  // Other scale tensors with the same plan: each call passes its own pointers.
  const ops::Fp8Blocked b2 = ops::quantize_128x128(random_gpu(n, k, DType::F32, 43), DType::E4M3);
  ops::matmul_fp8_block(a, b2, out);
  EXPECT_EQ(plans.plans_built(), built);
  EXPECT_LE(test::rel_frobenius(ops::to_double_vector(out), reference(a, b2)), kBoundF32);
}

TEST_F(CudaGemmFp8Block, AccumulateAddsToOut) {
  const int64_t m = 256, n = 512, k = 384;
  uint32_t seed = 60;
  for (const test::Fp8Pair& p : test::kFp8Pairs) {
    const ops::Fp8Blocked a = ops::quantize_1x128(random_gpu(m, k, DType::F32, seed++), p.a);
    const ops::Fp8Blocked b = ops::quantize_128x128(random_gpu(n, k, DType::F32, seed++), p.b);
    const std::vector<double> product = reference(a, b);
    for (DType od : {DType::BF16, DType::F32}) {
      const Tensor c = random_gpu(m, n, od, seed++);
      std::vector<double> ref = ops::to_double_vector(c);
      for (size_t i = 0; i < ref.size(); ++i) ref[i] += product[i];
      Tensor out = ops::clone(c);
      ops::matmul_fp8_block(a, b, out, /*accumulate=*/true);
      const double err = test::rel_frobenius(ops::to_double_vector(out), ref);
      const std::string what = "accumulate " + test::fp8_gemm_label(p, od, m, n, k);
      std::printf("[matmul_fp8_block] %-53s rel. Frobenius error %.3e\n", what.c_str(), err);
      EXPECT_LE(err, bound(od)) << what;
    }
  }
}

TEST_F(CudaGemmFp8Block, PlansCachedPerShapeAndScaleMode) {
  const int64_t m = 128, n = 128, k = 256;  // M a multiple of 128: the last product takes a 1x128 b
  const Tensor x = random_gpu(m, k, DType::F32, 71), w = random_gpu(n, k, DType::F32, 72);
  const ops::Fp8Blocked a = ops::quantize_1x128(x, DType::E4M3);
  const ops::Fp8Blocked b = ops::quantize_128x128(w, DType::E4M3);
  cuda::MatmulPlanCache& plans = ctx().matmul_plans();
  Tensor out = Tensor::empty(gpu, {m, n}, DType::BF16);
  const uint64_t before = plans.plans_built();
  ops::matmul_fp8_block(a, b, out);
  ops::matmul_fp8_block(a, b, out);
  EXPECT_EQ(plans.plans_built(), before + 1);
  // The per-tensor FP8 GEMM of the same problem: same shapes and types, other scale modes, another plan.
  ops::matmul_fp8(ops::quantize_per_tensor(x, DType::E4M3), ops::quantize_per_tensor(w, DType::E4M3), out);
  EXPECT_EQ(plans.plans_built(), before + 2);
  ops::matmul_fp8_block(a, b, out, /*accumulate=*/true);  // beta != 0: another plan
  EXPECT_EQ(plans.plans_built(), before + 3);
  ops::matmul_fp8_block(a, b, out);
  EXPECT_EQ(plans.plans_built(), before + 3);
  // A 1x128-quantized b of the same shape: another scale mode for cuBLASLt's A, another plan.
  ops::matmul_fp8_block(a, ops::quantize_1x128(w, DType::E4M3), out);
  EXPECT_EQ(plans.plans_built(), before + 4);
  gpu->synchronize();
}

TEST_F(CudaGemmFp8Block, Errors) {
  const ops::Fp8Blocked a5 = ops::quantize_1x128(random_gpu(8, 128, DType::F32, 81), DType::E5M2);
  const ops::Fp8Blocked b5 = ops::quantize_128x128(random_gpu(128, 128, DType::F32, 82), DType::E5M2);
  test::expect_error_containing([&] { ops::matmul_fp8_block(a5, b5); }, "both e5m2");
  test::expect_error_containing([&] { ops::matmul_fp8_block(a5, to_cpu(b5)); }, "different contexts");
  const ops::Fp8Blocked a6 = ops::quantize_1x128(random_gpu(6, 128, DType::F32, 83), DType::E4M3);
  test::expect_error_containing([&] { ops::matmul_fp8_block(a6, b5); }, "M = 6");
}

TEST(CudaGemmFp8BlockOffHopper, RefusedWithAReason) {
  if (ops::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device: cudaGetDeviceCount found none";
  if (CUBLAS_VERSION < 120900) GTEST_SKIP() << "cuBLAS " << CUBLAS_VERSION << " has no 128-block scale modes (12.9+)";
  const ContextPtr gpu = ops::make_context(Device::cuda(0));
  auto& ctx = static_cast<cuda::CudaContext&>(*gpu);
  if (is_hopper(ctx)) GTEST_SKIP() << "a Hopper device runs the block-scaled GEMM (see CudaGemmFp8Block)";
  const ops::Fp8Blocked a = ops::quantize_1x128(ops::zeros(gpu, {4, 128}, DType::F32), DType::E4M3);
  const ops::Fp8Blocked b = ops::quantize_128x128(ops::zeros(gpu, {128, 128}, DType::F32), DType::E4M3);
  test::expect_error_containing<NotImplemented>([&] { ops::matmul_fp8_block(a, b); }, "9.0");
}

#else

TEST(CudaGemmFp8Block, NotBuilt) {
  GTEST_SKIP() << "built without CUDA";
}

#endif  // COAT_WITH_CUDA

}  // namespace
}  // namespace coat
