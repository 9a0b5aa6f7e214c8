// cuBLASLt's candidate algorithms for a plan (cuda::matmul_candidates): the plan cache's algorithm is the
// heuristic's first, and every candidate computes the same product, for the per-tensor-scaled FP8 GEMM and for
// the 128-block-scaled one (1x128 x 128x128 and 1x128 x 1x128). Disabled benchmarks time every candidate on one
// Llama-2-7B block's FP8 GEMM shapes, per-tensor (the fp8 and coat recipes) and block-scaled (fp8_block), to
// say what choosing by time instead of by the heuristic's estimate would gain. Skips without a GPU (and below
// sm_89; the block-scaled tests off Hopper and below cuBLAS 12.9, as cuda::matmul_fp8_block refuses those).
//
// Tolerance between candidates: relative Frobenius difference 1e-3 with F32 output and precise accumulation.
// Each candidate's error against the exact sum is below 5e-4 (test_gemm_fp8.cpp measures 1.05e-4 .. 1.29e-4:
// partial sums promoted to FP32 every few k-blocks; test_gemm_fp8_block.cpp bounds the block-scaled one by
// 2.4e-4), so two candidates differ by at most the sum of theirs.
#include <gtest/gtest.h>

#include "cuda_test_util.h"
#include "fp8_reference.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "coat/core/error.h"
#include "coat/core/random_generator.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/matmul_fp8.h"
#include "coat/ops/matmul_fp8_block.h"
#include "coat/ops/quantize.h"
#include "coat/ops/quantize_block.h"

#ifdef COAT_WITH_CUDA
#include <cublasLt.h>
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

  /// Why cuda::matmul_fp8_block cannot run here (cuBLAS older than 12.9, or not compute capability 9.0), or
  /// empty when it can.
  std::string block_scaled_unsupported() {
    if (CUBLAS_VERSION < 120900)
      return "cuBLAS " + std::to_string(CUBLAS_VERSION) + " has no 128-block scale modes (12.9+)";
    if (ctx().properties().compute_capability_major != 9)
      return "cuBLASLt runs the VEC128_32F / BLK128x128_32F scale modes on compute capability 9.0 only; device "
             "has " + std::to_string(ctx().properties().compute_capability());
    return {};
  }

  /// Random normal BF16 [rows, cols] quantised in 1x128 groups (block_rows 1: ops::quantize_1x128) or 128x128
  /// blocks (block_rows 128: ops::quantize_128x128), the operands nn::linear_fp8_block hands the GEMM.
  ops::Fp8Blocked random_blocked(int64_t rows, int64_t cols, DType fmt, int block_rows, uint64_t seed) {
    Tensor x = Tensor::empty(gpu, {rows, cols}, DType::BF16);
    RandomGenerator gen{seed, 0};
    ops::normal_(x, gen, 0.0f, 1.0f);
    return block_rows == 1 ? ops::quantize_1x128(x, fmt) : ops::quantize_128x128(x, fmt);
  }

  /// The key and plan ops::matmul_fp8_block(a, b, out) uses (beta = 0), after one call has built it and set
  /// its scale pointers to a's and b's.
  std::pair<cuda::MatmulPlanKey, const cuda::MatmulPlan*> plan_of(const ops::Fp8Blocked& a, const ops::Fp8Blocked& b,
                                                                  Tensor& out) {
    ops::matmul_fp8_block(a, b, out, /*accumulate=*/false);
    const auto types = cuda::fp8gemm::operand_types(a.codes, b.codes, "test");
    const auto align = cuda::fp8gemm::checked_alignments(a.codes, b.codes, out, "test");
    const cuda::MatmulPlanKey key = cuda::fp8gemm::block_plan_key(
        a.codes.size(0), b.codes.size(0), a.codes.size(1), types, out.dtype(), false, b.block_rows, align);
    return {key, &ctx().matmul_plans().get(ctx().cublaslt(), key, ctx().workspace_bytes())};
  }

  /// out = a b^T with the plan's descriptor (and the scale pointers it holds) and layouts but algorithm `algo`
  /// (beta = 0).
  void run_codes(const cuda::MatmulPlan& plan, const cublasLtMatmulAlgo_t& algo, const Tensor& a_codes,
                 const Tensor& b_codes, Tensor& out) {
    const float alpha = 1.0f, beta = 0.0f;
    COAT_CUBLAS_CHECK(cublasLtMatmul(ctx().cublaslt(), plan.desc, &alpha, b_codes.data_ptr(), plan.a_layout,
                                     a_codes.data_ptr(), plan.b_layout, &beta, out.data_ptr(), plan.c_layout,
                                     out.data_ptr(), plan.c_layout, &algo, ctx().workspace(),
                                     ctx().workspace_bytes(), ctx().stream()));
  }
  template <typename Operand>
  void run_with(const cuda::MatmulPlan& plan, const cublasLtMatmulAlgo_t& algo, const Operand& a, const Operand& b,
                Tensor& out) {
    run_codes(plan, algo, a.codes, b.codes, out);
  }

  /// Up to 8 candidates for the plan of `ref` = a b^T (F32): the first is the plan's algorithm, each fits the
  /// workspace and computes ref within 1e-3 (see the top of this file).
  template <typename Operand>
  void expect_candidates_agree(const cuda::MatmulPlanKey& key, const cuda::MatmulPlan& plan, const Operand& a,
                               const Operand& b, const Tensor& ref, const std::string& label) {
    const std::vector<cublasLtMatmulHeuristicResult_t> found =
        cuda::matmul_candidates(ctx().cublaslt(), plan, key, ctx().workspace_bytes(), 8);
    ASSERT_FALSE(found.empty()) << label;
    EXPECT_LE(found.size(), 8u) << label;
    EXPECT_EQ(std::memcmp(&found.front().algo, &plan.algo, sizeof(cublasLtMatmulAlgo_t)), 0)
        << label << "the plan cache's algorithm is not the heuristic's first";
    for (size_t i = 0; i < found.size(); ++i) {
      EXPECT_LE(found[i].workspaceSize, ctx().workspace_bytes()) << label << "candidate " << i;
      Tensor out = ops::full(gpu, ref.shape(), 7.0, DType::F32);
      run_with(plan, found[i].algo, a, b, out);
      const double diff = test::rel_frobenius(ops::to_double_vector(out), ops::to_double_vector(ref));
      std::printf("%scandidate %zu: relative difference to the plan's %.3g\n", label.c_str(), i, diff);
      EXPECT_LT(diff, 1e-3) << label << "candidate " << i;
    }
  }

  /// Times every candidate (`run(algo)`, median of 10 after 3 warm-ups), prints one line (heuristic = the
  /// first, the fastest, the speed-up, all times) and returns the heuristic's and the fastest's ms.
  template <typename Run>
  std::pair<double, double> time_candidates(const char* linear, const char* what, int64_t m, int64_t n, int64_t k,
                                            const cuda::MatmulPlanKey& key,
                                            const std::vector<cublasLtMatmulHeuristicResult_t>& found, Run&& run) {
    COAT_CHECK(!found.empty(), Error, "no candidate for ", key.str());
    std::vector<double> ms;
    for (const auto& c : found) {
      ms.push_back(test::median_ms(ctx().stream(), 10, [&] { run(c.algo); }, 3));
    }
    size_t best = 0;
    for (size_t i = 1; i < ms.size(); ++i) best = ms[i] < ms[best] ? i : best;
    const double tflop = 2.0 * static_cast<double>(m) * n * k / 1e12;
    std::printf("%-8s %-6s m=%-6ld n=%-6ld k=%-6ld %2zu candidates | heuristic %.3f ms (%4.0f TFLOP/s) | best #%zu "
                "%.3f ms (%4.0f TFLOP/s) | %.3fx | all:",
                linear, what, static_cast<long>(m), static_cast<long>(n), static_cast<long>(k), found.size(), ms[0],
                tflop / (ms[0] * 1e-3), best, ms[best], tflop / (ms[best] * 1e-3), ms[0] / ms[best]);
    for (double t : ms) std::printf(" %.3f", t);
    std::printf("\n");
    return {ms[0], ms[best]};
  }
};

/// The linears of one Llama-2-7B block, and its tokens (4 x 2048) in the sweeps.
struct Llama7bLinear {
  const char* name;
  int64_t in, out;
};
constexpr int64_t kLlama7bTokens = 8192;
constexpr Llama7bLinear kLlama7bLinears[] = {
    {"qkv", 4096, 12288}, {"o", 4096, 4096}, {"gate_up", 4096, 22016}, {"down", 11008, 4096}};


TEST_F(CudaGemmCandidates, FirstIsThePlansAndAllComputeTheSameProduct) {
  const ops::Fp8PerTensor a = random_fp8(512, 1024, DType::E5M2, 1), b = random_fp8(768, 1024, DType::E4M3, 2);
  Tensor ref = Tensor::empty(gpu, {512, 768}, DType::F32);
  const auto [key, plan] = plan_of(a, b, ref, /*fast_accum=*/false);
  expect_candidates_agree(key, *plan, a, b, ref, "");
  if (HasFatalFailure()) return;
  EXPECT_THROW(cuda::matmul_candidates(ctx().cublaslt(), *plan, key, ctx().workspace_bytes(), 0), Error);
}

// Run with --gtest_also_run_disabled_tests --gtest_filter='*DISABLED_SweepLlama7bBlock'. One Llama-2-7B
// block at 4 x 2048 tokens: the forward (E4M3 x E4M3, fast accumulation, BF16 out), dgrad (E5M2 dy x E4M3
// weight, BF16 out) and wgrad (E5M2 dy^T x E4M3 x^T, F32 out) GEMMs of its four linears.
TEST_F(CudaGemmCandidates, DISABLED_SweepLlama7bBlock) {
  std::printf("device: %s\n", ctx().properties().str().c_str());
  const int64_t tokens = kLlama7bTokens;
  double heuristic_total = 0.0, best_total = 0.0;
  for (const Llama7bLinear& l : kLlama7bLinears) {
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
      const auto [heuristic, fastest] = time_candidates(l.name, g.what.c_str(), g.m, g.n, g.k, key, found,
                                                        [&](const auto& algo) { run_with(*plan, algo, a, b, out); });
      heuristic_total += heuristic;
      best_total += fastest;
    }
  }
  std::printf("block GEMMs: heuristic %.3f ms, fastest candidates %.3f ms (%.3fx)\n", heuristic_total, best_total,
              heuristic_total / best_total);
}

// The same for the 128-block-scaled GEMMs: a 1x128-quantized a [M,K] against a 128x128-quantized b [N,K]
// (cuBLASLt's A scale mode BLK128x128_32F, B VEC128_32F) and against a 1x128-quantized b (both VEC128_32F).
TEST_F(CudaGemmCandidates, BlockScaledCandidatesComputeTheSameProduct) {
  if (const std::string why = block_scaled_unsupported(); !why.empty()) GTEST_SKIP() << why;
  for (int b_block_rows : {128, 1}) {
    const std::string label = "b " + std::to_string(b_block_rows) + "x128: ";
    const ops::Fp8Blocked a = random_blocked(256, 512, DType::E5M2, 1, 5);
    const ops::Fp8Blocked b = random_blocked(384, 512, DType::E4M3, b_block_rows, 6);
    Tensor ref = Tensor::empty(gpu, {256, 384}, DType::F32);
    const auto [key, plan] = plan_of(a, b, ref);
    expect_candidates_agree(key, *plan, a, b, ref, label);
    if (HasFatalFailure()) return;
  }
}

// Run with --gtest_also_run_disabled_tests --gtest_filter='*DISABLED_SweepLlama7bBlockScaled'. The fp8_block
// recipe's GEMMs (nn::linear_fp8_block) of the same block, all without fast accumulation (cuBLASLt has none for
// block scale modes) and with beta 0 (a weight gradient's first write): fprop (x E4M3 in 1x128 groups along
// `in` x W E4M3 in 128x128 blocks, BF16 out), dgrad (dy E5M2 in 1x128 groups along `out` x W^T E4M3 in 128x128
// blocks, BF16 out), both VEC128_32F x BLK128x128_32F, and wgrad (dy^T E5M2 x x^T E4M3, both in 1x128 groups
// along the tokens, VEC128_32F x VEC128_32F, F32 out).
TEST_F(CudaGemmCandidates, DISABLED_SweepLlama7bBlockScaled) {
  if (const std::string why = block_scaled_unsupported(); !why.empty()) GTEST_SKIP() << why;
  std::printf("device: %s\n", ctx().properties().str().c_str());
  const int64_t tokens = kLlama7bTokens;
  double heuristic_total = 0.0, best_total = 0.0;
  for (const Llama7bLinear& l : kLlama7bLinears) {
    struct Gemm {
      const char* what;
      int64_t m, n, k;
      DType fa, fb, out;
      int b_block_rows;  // 128: a weight (BLK128x128_32F); 1: the wgrad's x^T (VEC128_32F)
    };
    const Gemm gemms[] = {{"fprop", tokens, l.out, l.in, DType::E4M3, DType::E4M3, DType::BF16, 128},
                          {"dgrad", tokens, l.in, l.out, DType::E5M2, DType::E4M3, DType::BF16, 128},
                          {"wgrad", l.out, l.in, tokens, DType::E5M2, DType::E4M3, DType::F32, 1}};
    for (const Gemm& g : gemms) {
      const ops::Fp8Blocked a = random_blocked(g.m, g.k, g.fa, 1, 3);
      const ops::Fp8Blocked b = random_blocked(g.n, g.k, g.fb, g.b_block_rows, 4);
      Tensor out = Tensor::empty(gpu, {g.m, g.n}, g.out);
      const auto [key, plan] = plan_of(a, b, out);
      const auto found = cuda::matmul_candidates(ctx().cublaslt(), *plan, key, ctx().workspace_bytes(), 16);
      const auto [heuristic, fastest] = time_candidates(l.name, g.what, g.m, g.n, g.k, key, found,
                                                        [&](const auto& algo) { run_with(*plan, algo, a, b, out); });
      heuristic_total += heuristic;
      best_total += fastest;
    }
  }
  std::printf("block-scaled GEMMs: heuristic %.3f ms, fastest candidates %.3f ms (%.3fx)\n", heuristic_total,
              best_total, heuristic_total / best_total);
}

#else

TEST(CudaGemmCandidates, NotBuilt) { GTEST_SKIP() << "built without CUDA"; }

#endif

}  // namespace
}  // namespace coat
