// cuBLASLt's candidate algorithms for a plan (cuda::matmul_candidates): the plan cache's algorithm is the
// heuristic's first, and every candidate computes the same product. A disabled benchmark times every
// candidate on one Llama-2-7B block's FP8 GEMM shapes, to say what choosing by time instead of by the
// heuristic's estimate would gain. Skips without a GPU (and below sm_89).
//
// Tolerance between candidates: relative Frobenius difference 1e-3 with F32 output and precise accumulation.
// Each candidate's error against the exact sum is below 5e-4 (test_gemm_fp8.cpp measures 1.05e-4 .. 1.29e-4:
// partial sums promoted to FP32 every few k-blocks), so two candidates differ by at most the sum of theirs.
#include <gtest/gtest.h>

#include "cuda_test_util.h"
#include "fp8_reference.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "coat/core/random_generator.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/matmul_fp8.h"
#include "coat/ops/quantize.h"

#ifdef COAT_WITH_CUDA
#include <cuda_runtime_api.h>

#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/cuda_context.h"
#include "coat/backend/cuda/fp8_gemm_common.h"
#include "coat/backend/cuda/matmul_plan_cache.h"
#include "cuda_timing.h"
#endif

namespace coat {
namespace {

#ifdef COAT_WITH_CUDA

class CudaGemmCandidates : public test::CudaTest {
 protected:
  void SetUp() override {
    test::CudaTest::SetUp();
    if (IsSkipped()) return;
    if (ctx().properties().compute_capability() < 89)
      GTEST_SKIP() << "FP8 GEMMs need compute capability 8.9+, device has " << ctx().properties().compute_capability();
  }

  cuda::CudaContext& ctx() { return static_cast<cuda::CudaContext&>(*gpu); }

  ops::Fp8PerTensor random_fp8(int64_t rows, int64_t cols, DType fmt, uint64_t seed) {
    Tensor x = Tensor::empty(gpu, {rows, cols}, DType::BF16);
    RandomGenerator gen{seed, 0};
    ops::normal_(x, gen, 0.0f, 1.0f);
    return ops::quantize_per_tensor(x, fmt);
  }

  /// The key and plan ops::matmul_fp8(a, b, out) uses, after one call has built it and set its scale pointers.
  std::pair<cuda::MatmulPlanKey, const cuda::MatmulPlan*> plan_of(const ops::Fp8PerTensor& a,
                                                                  const ops::Fp8PerTensor& b, Tensor& out,
                                                                  bool fast_accum) {
    ops::matmul_fp8(a, b, out, /*accumulate=*/false, fast_accum);
    const auto types = cuda::fp8gemm::operand_types(a.codes, b.codes, "test");
    const auto align = cuda::fp8gemm::checked_alignments(a.codes, b.codes, out, "test");
    const cuda::MatmulPlanKey key = cuda::fp8gemm::tn_plan_key(a.codes.size(0), b.codes.size(0), a.codes.size(1),
                                                               types, out.dtype(), false, fast_accum, align);
    return {key, &ctx().matmul_plans().get(ctx().cublaslt(), key, ctx().workspace_bytes())};
  }

  /// out = a b^T with the plan's descriptor and layouts but algorithm `algo` (beta = 0).
  void run_with(const cuda::MatmulPlan& plan, const cublasLtMatmulAlgo_t& algo, const ops::Fp8PerTensor& a,
                const ops::Fp8PerTensor& b, Tensor& out) {
    const float alpha = 1.0f, beta = 0.0f;
    COAT_CUBLAS_CHECK(cublasLtMatmul(ctx().cublaslt(), plan.desc, &alpha, b.codes.data_ptr(), plan.a_layout,
                                     a.codes.data_ptr(), plan.b_layout, &beta, out.data_ptr(), plan.c_layout,
                                     out.data_ptr(), plan.c_layout, &algo, ctx().workspace(),
                                     ctx().workspace_bytes(), ctx().stream()));
  }
};


TEST_F(CudaGemmCandidates, FirstIsThePlansAndAllComputeTheSameProduct) {
  const ops::Fp8PerTensor a = random_fp8(512, 1024, DType::E5M2, 1), b = random_fp8(768, 1024, DType::E4M3, 2);
  Tensor ref = Tensor::empty(gpu, {512, 768}, DType::F32);
  const auto [key, plan] = plan_of(a, b, ref, /*fast_accum=*/false);
  const std::vector<cublasLtMatmulHeuristicResult_t> found =
      cuda::matmul_candidates(ctx().cublaslt(), *plan, key, ctx().workspace_bytes(), 8);
  ASSERT_FALSE(found.empty());
  EXPECT_LE(found.size(), 8u);
  EXPECT_EQ(std::memcmp(&found.front().algo, &plan->algo, sizeof(cublasLtMatmulAlgo_t)), 0)
      << "the plan cache's algorithm is not the heuristic's first";
  for (size_t i = 0; i < found.size(); ++i) {
    EXPECT_LE(found[i].workspaceSize, ctx().workspace_bytes()) << "candidate " << i;
    Tensor out = ops::full(gpu, {512, 768}, 7.0, DType::F32);
    run_with(*plan, found[i].algo, a, b, out);
    const double diff = test::rel_frobenius(ops::to_double_vector(out), ops::to_double_vector(ref));
    std::printf("candidate %zu: relative difference to the plan's %.3g\n", i, diff);
    EXPECT_LT(diff, 1e-3) << "candidate " << i;
  }
  EXPECT_THROW(cuda::matmul_candidates(ctx().cublaslt(), *plan, key, ctx().workspace_bytes(), 0), Error);
}

// Run with --gtest_also_run_disabled_tests --gtest_filter='*DISABLED_SweepLlama7bBlock'. One Llama-2-7B
// block at 4 x 2048 tokens: the forward (E4M3 x E4M3, fast accumulation, BF16 out), dgrad (E5M2 dy x E4M3
// weight, BF16 out) and wgrad (E5M2 dy^T x E4M3 x^T, F32 out) GEMMs of its four linears.
TEST_F(CudaGemmCandidates, DISABLED_SweepLlama7bBlock) {
  std::printf("device: %s\n", ctx().properties().str().c_str());
  struct Linear {
    const char* name;
    int64_t in, out;
  };
  const int64_t tokens = 8192;
  const Linear linears[] = {{"qkv", 4096, 12288}, {"o", 4096, 4096}, {"gate_up", 4096, 22016}, {"down", 11008, 4096}};
  double heuristic_total = 0.0, best_total = 0.0;
  for (const Linear& l : linears) {
    struct Gemm {
      std::string what;
      int64_t m, n, k;
      DType fa, fb, out;
      bool fast;
    };
    const Gemm gemms[] = {{"fprop", tokens, l.out, l.in, DType::E4M3, DType::E4M3, DType::BF16, true},
                          {"dgrad", tokens, l.in, l.out, DType::E5M2, DType::E4M3, DType::BF16, false},
                          {"wgrad", l.out, l.in, tokens, DType::E5M2, DType::E4M3, DType::F32, false}};
    for (const Gemm& g : gemms) {
      const ops::Fp8PerTensor a = random_fp8(g.m, g.k, g.fa, 3), b = random_fp8(g.n, g.k, g.fb, 4);
      Tensor out = Tensor::empty(gpu, {g.m, g.n}, g.out);
      const auto [key, plan] = plan_of(a, b, out, g.fast);
      const auto found = cuda::matmul_candidates(ctx().cublaslt(), *plan, key, ctx().workspace_bytes(), 16);
      std::vector<double> ms;
      for (const auto& c : found) {
        ms.push_back(test::median_ms(ctx().stream(), 10, [&] { run_with(*plan, c.algo, a, b, out); }, 3));
      }
      size_t best = 0;
      for (size_t i = 1; i < ms.size(); ++i) best = ms[i] < ms[best] ? i : best;
      const double tflop = 2.0 * static_cast<double>(g.m) * g.n * g.k / 1e12;
      std::printf("%-8s %-6s m=%-6ld n=%-6ld k=%-6ld %2zu candidates | heuristic %.3f ms (%4.0f TFLOP/s) | best #%zu "
                  "%.3f ms (%4.0f TFLOP/s) | %.3fx | all:",
                  l.name, g.what.c_str(), static_cast<long>(g.m), static_cast<long>(g.n), static_cast<long>(g.k),
                  found.size(), ms[0], tflop / (ms[0] * 1e-3), best, ms[best], tflop / (ms[best] * 1e-3),
                  ms[0] / ms[best]);
      for (double t : ms) std::printf(" %.3f", t);
      std::printf("\n");
      heuristic_total += ms[0];
      best_total += ms[best];
    }
  }
  std::printf("block GEMMs: heuristic %.3f ms, fastest candidates %.3f ms (%.3fx)\n", heuristic_total, best_total,
              heuristic_total / best_total);
}

#else

TEST(CudaGemmCandidates, NotBuilt) { GTEST_SKIP() << "built without CUDA"; }

#endif

}  // namespace
}  // namespace coat
