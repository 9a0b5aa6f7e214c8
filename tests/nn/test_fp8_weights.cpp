// nn::Fp8Weights with the optimizer step's maxima (put_maxima): the copy made from them has the bytes of the
// one made by an amax pass (codes, codes_t, scale, scale_inv), they are used only for the weights they were
// put for (an invalidate() without them goes back to the pass), and what they say is what the scale follows.
#include <gtest/gtest.h>

#include <random>

#include "coat/nn/fp8_weights.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/elementwise.h"
#include "coat/ops/quantized_moment.h"
#include "coat/ops/runtime.h"
#include "expect_error.h"

namespace coat::nn {
namespace {

struct Weight {
  ContextPtr ctx = ops::make_context(Device::cpu());
  Parameter w;
  Tensor unit;  // the master's flat buffer: w.master views [offset, offset + 96 * 64)
};

/// An F32 master [96, 64] (no compute copy: FP8 copies are quantised from it) 128 elements into a flat unit.
Weight make_weight(uint32_t seed) {
  Weight s;
  std::mt19937 rng(seed);
  std::normal_distribution<double> n(0.0, 0.02);
  std::vector<double> v(128 + 96 * 64);
  for (double& x : v) x = n(rng);
  s.unit = ops::from_vector(s.ctx, {static_cast<int64_t>(v.size())}, DType::F32, v);
  s.w.name = "model.layers.0.mlp.down_proj.weight";
  s.w.master = s.unit.slice(0, 128, 128 + 96 * 64).reshape({96, 64});
  return s;
}

/// The unit's step maxima (what adamw_step_quantized writes), and the weight's slice of them.
Tensor weight_maxima(const Weight& s) {
  Tensor all = ops::zeros(s.ctx, {s.unit.numel() / ops::kStepMaximaGranule}, DType::F32);
  ops::step_maxima(s.unit, all);
  return all.slice(0, 1, all.numel());
}

void expect_same_copy(const ops::Fp8PerTensor& a, const ops::Fp8PerTensor& b) {
  EXPECT_EQ(ops::to_bytes(a.codes), ops::to_bytes(b.codes));
  EXPECT_EQ(ops::to_bytes(a.codes_t), ops::to_bytes(b.codes_t));
  EXPECT_EQ(ops::to_bytes(a.scale), ops::to_bytes(b.scale));
  EXPECT_EQ(ops::to_bytes(a.scale_inv), ops::to_bytes(b.scale_inv));
}

TEST(Fp8Weights, CopyFromStepMaximaHasTheBytesOfTheAmaxPass) {
  Weight s = make_weight(3);
  Fp8Weights weights;
  const ops::Fp8PerTensor by_pass = weights.get(s.w);
  EXPECT_EQ(weights.quantizations_from_maxima(), 0);
  weights.invalidate();
  weights.put_maxima(s.w, weight_maxima(s));
  const ops::Fp8PerTensor by_maxima = weights.get(s.w);
  EXPECT_EQ(weights.quantizations(), 2);
  EXPECT_EQ(weights.quantizations_from_maxima(), 1);
  expect_same_copy(by_maxima, by_pass);
  // Reused until invalidated: no third quantisation.
  (void)weights.get(s.w);
  EXPECT_EQ(weights.quantizations(), 2);
}

TEST(Fp8Weights, MaximaPutBeforeAnInvalidateAreNotUsed) {
  Weight s = make_weight(4);
  Fp8Weights weights;
  weights.put_maxima(s.w, weight_maxima(s));
  weights.invalidate();  // the weights changed after the maxima were taken
  (void)weights.get(s.w);
  EXPECT_EQ(weights.quantizations(), 1);
  EXPECT_EQ(weights.quantizations_from_maxima(), 0);
}

TEST(Fp8Weights, TheScaleFollowsThePutMaxima) {
  // Maxima twice the weight's: the scale halves, so the copy differs from the pass's (the maxima are used,
  // not recomputed).
  Weight s = make_weight(5);
  Fp8Weights weights;
  const ops::Fp8PerTensor by_pass = weights.get(s.w);
  const double scale = ops::to_double_vector(by_pass.scale)[0];
  weights.invalidate();
  weights.put_maxima(s.w, ops::scale(weight_maxima(s), 2.0));
  const ops::Fp8PerTensor doubled = weights.get(s.w);
  EXPECT_DOUBLE_EQ(ops::to_double_vector(doubled.scale)[0], scale / 2.0);
  EXPECT_NE(ops::to_bytes(doubled.codes), ops::to_bytes(by_pass.codes));
}

TEST(Fp8Weights, EmptyMaximaAreRefusedNamingTheWeight) {
  Weight s = make_weight(6);
  Fp8Weights weights;
  test::expect_error_containing([&] { weights.put_maxima(s.w, Tensor()); }, "down_proj");
}

}  // namespace
}  // namespace coat::nn
