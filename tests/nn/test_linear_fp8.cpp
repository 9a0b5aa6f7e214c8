// nn::linear_fp8 on the CPU backend (FP8 GEMMs as the exact FP64 product of the codes): the forward, dgrad
// and wgrad against the BF16 nn::linear of the same operands; the two save policies keep what they say and
// give the same gradients (the forward's FP8 transposes are what the backward would make again); the weight
// copy is reused until invalidated; an inf in the input is not saturated away; shapes cuBLASLt's FP8 cannot
// take are refused with the layer's name.
//
// Tolerance: relative L2 distance <= 0.1 against BF16. E4M3 rounds each operand by <= 2^-4 relative (rms
// ~3.6%), E5M2 the output gradient by <= 2^-3 (rms ~7.2%); a product of two such operands is off by ~8% rms per
// term, and the sums over K = 64 .. 96 random terms keep that relative size, so 0.1 holds with a little room.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "coat/autograd/tape.h"
#include "coat/nn/linear.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/runtime.h"
#include "expect_error.h"
#include "nn/linear_pass.h"

namespace coat::nn {
namespace {

using Operands = test::LinearOperands;
using Result = test::LinearResult;
using test::rel_l2;

Operands make(int64_t rows, int64_t in, int64_t out) {
  Operands s;
  std::mt19937 rng(11);
  std::normal_distribution<double> n(0.0, 1.0);
  std::vector<double> xv(rows * in), wv(out * in), dyv(rows * out);
  for (double& v : xv) v = n(rng);
  for (double& v : wv) v = 0.1 * n(rng);
  for (double& v : dyv) v = 0.01 * n(rng);
  s.x = ops::from_vector(s.ctx, {rows, in}, DType::BF16, xv);
  s.dy = ops::from_vector(s.ctx, {rows, out}, DType::BF16, dyv);
  s.w.name = std::string("weight");
  s.w.value = ops::from_vector(s.ctx, {out, in}, DType::BF16, wv);
  s.w.grad = ops::zeros(s.ctx, {out, in}, DType::F32);
  return s;
}

Result run(Operands& s, int mode, Fp8Weights* weights) {  // 0: BF16, 1: FP8 keeping x, 2: FP8 keeping FP8 x^T
  return test::run_linear(s, [&](autograd::Tape& tape, const autograd::Var& x, Parameter& w) {
    return mode == 0 ? linear(tape, x, w) : linear_fp8(tape, x, w, *weights, mode == 2);
  });
}

TEST(LinearFp8, FollowsBf16AndBothSavePoliciesAgree) {
  Operands s = make(48, 64, 96);
  Fp8Weights weights;
  const Result ref = run(s, 0, nullptr);
  const Result keep_x = run(s, 1, &weights);
  const Result keep_fp8 = run(s, 2, &weights);
  EXPECT_EQ(weights.quantizations(), 1);  // one copy for all four uses
  for (const Result* r : {&keep_x, &keep_fp8}) {
    EXPECT_LE(rel_l2(r->y, ref.y), 0.1);
    EXPECT_LE(rel_l2(r->dx, ref.dx), 0.1);
    EXPECT_LE(rel_l2(r->dw, ref.dw), 0.1);
    EXPECT_GT(rel_l2(r->y, ref.y), 0.0);
  }
  EXPECT_EQ(keep_fp8.y, keep_x.y);
  EXPECT_EQ(keep_fp8.dx, keep_x.dx);
  EXPECT_EQ(keep_fp8.dw, keep_x.dw);  // the same x^T codes, made in the forward or again in the backward
  // Keeping x: its 2 bytes per element; keeping the FP8 transpose: 1 byte per element and two F32 scalars.
  EXPECT_EQ(keep_x.saved, size_t{48 * 64 * 2});
  EXPECT_EQ(keep_fp8.saved, size_t{48 * 64 + 2 * 4});
  weights.invalidate();
  run(s, 1, &weights);
  EXPECT_EQ(weights.quantizations(), 2);
}

TEST(LinearFp8, InfInTheInputIsNotSaturatedAway) {
  Operands s = make(16, 32, 16);
  std::vector<double> xv = ops::to_double_vector(s.x);
  xv[5] = INFINITY;
  s.x = ops::from_vector(s.ctx, {16, 32}, DType::BF16, xv);
  Fp8Weights weights;
  autograd::Tape tape(/*grad_enabled=*/false);
  const std::vector<double> y =
      ops::to_double_vector(linear_fp8(tape, tape.leaf(s.x), s.w, weights, false).value);
  size_t nan = 0;
  for (double v : y) nan += std::isnan(v) ? 1 : 0;
  EXPECT_EQ(nan, y.size());  // the amax is inf: the scale is NaN, so every output is NaN, not a finite guess
}

TEST(LinearFp8, RefusesShapesFp8GemmsCannotTake) {
  Operands s = make(16, 40, 16);  // in = 40 is not a multiple of 16
  Fp8Weights weights;
  autograd::Tape tape;
  test::expect_error_containing<InvalidArgument>(
      [&] { linear_fp8(tape, tape.leaf(s.x, true), s.w, weights, true); }, "precision.bf16_layers");
}

}  // namespace
}  // namespace coat::nn
