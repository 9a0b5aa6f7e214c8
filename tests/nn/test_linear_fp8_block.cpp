// nn::linear_fp8_block on the CPU backend (the block-scaled FP8 GEMMs as the exact FP64 product of the
// dequantised codes): forward, dgrad and wgrad against the BF16 nn::linear of the same random non-zero
// operands; each of the three is exactly the documented block-scaled product (the operands quantised as the
// header says, W^T from the weight cache); the gradient is overwritten when unset and accumulated otherwise;
// BF16 input saved; the weight copy is made once and reused until invalidated; shapes that are not multiples
// of 128 are refused with the weight's name and precision.bf16_layers.
//
// Tolerances (relative L2 distance to the BF16 linear). Rounding to FP8 changes an element in the normal
// range by at most half an ulp: 2^-4 relative for E4M3 (3 mantissa bits), 2^-3 for E5M2 (2 bits); as the
// relative position of a value within its binade is spread out, the rms is below that bound / sqrt(3): 3.6%
// (E4M3) and 7.2% (E5M2). With one scale per 1x128 group or 128x128 block, random normal values (amax ~ 3-4
// sigma) stay in the normal range of both formats (2^-6 .. 448 for E4M3 after scaling, more for E5M2), so
// these bounds hold per element. A product of two independently rounded operands is off by the root sum of
// squares, and a sum over K >= 256 random-sign terms keeps that relative size:
//   fprop  E4M3 x E4M3: sqrt(2) * 3.6% = 5.1%            -> bound 0.065
//   dgrad  E5M2 x E4M3: sqrt(7.2^2 + 3.6^2)% = 8.0%      -> bound 0.1
//   wgrad  E5M2 x E4M3: 8.0%                             -> bound 0.1
// (about 25% above the rms; BF16's own rounding, 2^-9, is negligible). The measured values are printed.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>

#include "coat/autograd/tape.h"
#include "coat/nn/linear.h"
#include "coat/nn/linear_fp8_block.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/matmul_fp8_block.h"
#include "coat/ops/quantize_block.h"
#include "coat/ops/runtime.h"
#include "expect_error.h"
#include "nn/linear_pass.h"

namespace coat::nn {
namespace {

constexpr double kBoundFprop = 0.065;
constexpr double kBoundGrad = 0.1;

using Operands = test::LinearOperands;
using Result = test::LinearResult;
using test::rel_l2;

// Random normal values, none of them zero, with magnitudes that differ per 128 columns (so that groups and
// blocks get different scales).
std::vector<double> random_values(int64_t rows, int64_t cols, double std, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> n(0.0, 1.0);
  std::vector<double> v(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      double z = n(rng);
      if (std::fabs(z) < 1e-3) z = z < 0.0 ? -1e-3 : 1e-3;
      v[static_cast<size_t>(r * cols + c)] = std * z * std::exp2(static_cast<double>((c / 128) % 3) - 1.0);
    }
  }
  return v;
}

Operands make(int64_t rows, int64_t in, int64_t out) {
  Operands s;
  s.x = ops::from_vector(s.ctx, {rows, in}, DType::BF16, random_values(rows, in, 1.0, 11));
  s.dy = ops::from_vector(s.ctx, {rows, out}, DType::BF16, random_values(rows, out, 0.01, 12));
  s.w.name = "layers.0.mlp.down_proj.weight";
  s.w.value = ops::from_vector(s.ctx, {out, in}, DType::BF16, random_values(out, in, 0.1, 13));
  s.w.grad = ops::zeros(s.ctx, {out, in}, DType::F32);
  return s;
}

Result run(Operands& s, Fp8BlockWeights* weights) {  // nullptr: the BF16 linear
  return test::run_linear(s, [&](autograd::Tape& tape, const autograd::Var& x, Parameter& w) {
    return weights == nullptr ? linear(tape, x, w) : linear_fp8_block(tape, x, w, *weights);
  });
}

TEST(LinearFp8Block, FollowsBf16) {
  Operands s = make(256, 384, 256);
  Fp8BlockWeights weights;
  const Result ref = run(s, nullptr);
  const Result fp8 = run(s, &weights);
  const double ey = rel_l2(fp8.y, ref.y), edx = rel_l2(fp8.dx, ref.dx), edw = rel_l2(fp8.dw, ref.dw);
  std::printf("[linear_fp8_block] relative L2 to bf16: y %.4f (bound %.3f), dx %.4f, dW %.4f (bound %.3f)\n",
              ey, kBoundFprop, edx, edw, kBoundGrad);
  EXPECT_LE(ey, kBoundFprop);
  EXPECT_LE(edx, kBoundGrad);
  EXPECT_LE(edw, kBoundGrad);
  EXPECT_GT(ey, 0.0);  // FP8 really ran
  EXPECT_GT(edw, 0.0);
  EXPECT_EQ(fp8.saved, size_t{256 * 384 * 2});  // the BF16 input, as the fp8 recipe
  EXPECT_EQ(weights.quantizations(), 1);        // one copy for the forward and the dgrad
}

// save_fp8_input: the wgrad's E4M3 groups of x^T made in the forward (from the read that makes fprop's) and kept
// instead of x: the same codes, so every output is byte-identical; about half the bytes kept.
TEST(LinearFp8Block, KeepingTheFp8InputGivesTheSameBytes) {
  Operands s = make(256, 384, 256);
  Fp8BlockWeights weights;
  const Result plain = run(s, &weights);
  const Result kept = test::run_linear(s, [&](autograd::Tape& tape, const autograd::Var& x, Parameter& w) {
    return linear_fp8_block(tape, x, w, weights, /*save_fp8_input=*/true);
  });
  EXPECT_EQ(kept.y, plain.y);
  EXPECT_EQ(kept.dx, plain.dx);
  EXPECT_EQ(kept.dw, plain.dw);
  EXPECT_EQ(kept.saved, size_t{384 * 256 + 2 * 384 * 4});  // codes of x^T [384, 256], scales [2, 384]
  EXPECT_EQ(plain.saved, size_t{256 * 384 * 2});
}

TEST(LinearFp8Block, EachProductIsTheDocumentedBlockScaledGemm) {
  Operands s = make(128, 256, 384);
  Fp8BlockWeights weights;
  const Result got = run(s, &weights);
  // fprop: x in 1x128 groups (E4M3) x W in 128x128 blocks (E4M3).
  const ops::Fp8Blocked wq = ops::quantize_128x128(s.w.value, DType::E4M3);
  const Tensor y = ops::matmul_fp8_block(ops::quantize_1x128(s.x, DType::E4M3), wq, DType::BF16);
  EXPECT_EQ(got.y, ops::to_double_vector(y));
  // dgrad: dy in 1x128 groups along `out` (E5M2) x W^T in 128x128 blocks (E4M3), BF16.
  const ops::Fp8Blocked wtq = ops::quantize_128x128(ops::contiguous(s.w.value.transpose(0, 1)), DType::E4M3);
  const Tensor dx = ops::matmul_fp8_block(ops::quantize_1x128(s.dy, DType::E5M2), wtq, DType::BF16);
  EXPECT_EQ(got.dx, ops::to_double_vector(dx));
  // wgrad: dy^T (E5M2) x x^T (E4M3), both in 1x128 groups along the tokens, F32.
  const Tensor dw = ops::matmul_fp8_block(
      ops::quantize_1x128(ops::contiguous(s.dy.transpose(0, 1)), DType::E5M2),
      ops::quantize_1x128(ops::contiguous(s.x.transpose(0, 1)), DType::E4M3), DType::F32);
  EXPECT_EQ(got.dw, ops::to_double_vector(dw));
  // The cache holds exactly W and W^T as quantize_128x128 makes them.
  const Fp8BlockWeight& cached = weights.get(s.w);
  EXPECT_EQ(ops::to_bytes(cached.w.codes), ops::to_bytes(wq.codes));
  EXPECT_EQ(ops::to_bytes(cached.w.scale_inv), ops::to_bytes(wq.scale_inv));
  EXPECT_EQ(ops::to_bytes(cached.w_t.codes), ops::to_bytes(wtq.codes));
  EXPECT_EQ(ops::to_bytes(cached.w_t.scale_inv), ops::to_bytes(wtq.scale_inv));
  EXPECT_EQ(cached.w.codes.storage()->category(), MemoryCategory::Weights);
  EXPECT_EQ(cached.w_t.scale_inv.storage()->category(), MemoryCategory::Weights);
  EXPECT_EQ(weights.bytes(),
            wq.codes.nbytes() + wq.scale_inv.nbytes() + wtq.codes.nbytes() + wtq.scale_inv.nbytes());
}

TEST(LinearFp8Block, UnsetGradientOverwrittenSetGradientAccumulated) {
  Operands s = make(128, 128, 128);
  Fp8BlockWeights weights;
  const std::vector<double> once = run(s, &weights).dw;
  const auto backward = [&] {
    autograd::Tape tape;
    autograd::Var x = tape.leaf(s.x, true);
    tape.backward(linear_fp8_block(tape, x, s.w, weights), s.dy);
  };
  ops::fill_(s.w.grad, std::nan(""));  // stale contents: must not be read
  s.w.grad_unset = true;
  backward();
  EXPECT_FALSE(s.w.grad_unset);
  EXPECT_EQ(ops::to_double_vector(s.w.grad), once);
  backward();  // now set: added to
  const std::vector<double> twice = ops::to_double_vector(s.w.grad);
  for (size_t i = 0; i < once.size(); ++i)
    ASSERT_NEAR(twice[i], 2.0 * once[i], 1e-6 * std::fabs(once[i])) << i;
}

TEST(LinearFp8Block, WeightCopyReusedUntilInvalidated) {
  Operands s = make(128, 256, 128);
  Fp8BlockWeights weights;
  run(s, &weights);
  run(s, &weights);
  EXPECT_EQ(weights.quantizations(), 1);
  weights.invalidate();
  run(s, &weights);
  EXPECT_EQ(weights.quantizations(), 2);
  // Without gradients: forward only, the same copy.
  autograd::Tape tape(/*grad_enabled=*/false);
  linear_fp8_block(tape, tape.leaf(s.x), s.w, weights);
  EXPECT_EQ(weights.quantizations(), 2);
  EXPECT_EQ(tape.saved_bytes(), size_t{0});
}

TEST(LinearFp8Block, RefusesShapesThatAreNotMultiplesOf128) {
  using test::expect_error_containing;
  for (const auto& [rows, in, out] :
       {std::tuple<int64_t, int64_t, int64_t>{128, 192, 128}, {128, 128, 64}, {64, 128, 128}}) {
    Operands s = make(rows, in, out);
    Fp8BlockWeights weights;
    autograd::Tape tape;
    const std::string what =
        std::to_string(rows) + " rows, [" + std::to_string(out) + ", " + std::to_string(in) + "]";
    expect_error_containing<InvalidArgument>(
        [&] { linear_fp8_block(tape, tape.leaf(s.x, true), s.w, weights); }, "layers.0.mlp.down_proj.weight");
    expect_error_containing<InvalidArgument>(
        [&] { linear_fp8_block(tape, tape.leaf(s.x, true), s.w, weights); }, "precision.bf16_layers");
    EXPECT_EQ(weights.quantizations(), 0) << what;
  }
  // The weight cache refuses such a weight by itself too.
  Operands s = make(128, 192, 128);
  Fp8BlockWeights weights;
  expect_error_containing<InvalidArgument>([&] { weights.get(s.w); }, "precision.bf16_layers");
}

}  // namespace
}  // namespace coat::nn
