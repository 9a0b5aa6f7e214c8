// nn::Fp8Weights with the optimizer step's maxima (put_maxima): the copy made from them has the bytes of the
// one made by an amax pass (codes, codes_t, scale, scale_inv), they are used only for the weights they were
// put for (an invalidate() without them goes back to the pass), and what they say is what the scale follows.
// Without kept transposes (set_keep_transpose(false)): W's codes and scale are the kept copy's, the W^T made for
// the backward has the kept codes_t's bytes, and the copy holds one byte per element less.
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

TEST(Fp8Weights, TransposeMadeOnUseHasTheKeptBytes) {
  for (const bool from_maxima : {false, true}) {
    SCOPED_TRACE(from_maxima ? "from the step's maxima" : "from an amax pass");
    Weight s = make_weight(7);
    Fp8Weights kept, made;
    made.set_keep_transpose(false);
    EXPECT_TRUE(kept.keeps_transpose());
    EXPECT_FALSE(made.keeps_transpose());
    if (from_maxima) {
      kept.put_maxima(s.w, weight_maxima(s));
      made.put_maxima(s.w, weight_maxima(s));
    }
    const ops::Fp8PerTensor& k = kept.get(s.w);
    const ops::Fp8PerTensor& m = made.get(s.w);
    EXPECT_EQ(made.quantizations_from_maxima(), from_maxima ? 1 : 0);
    EXPECT_FALSE(m.codes_t.defined());
    EXPECT_EQ(ops::to_bytes(m.codes), ops::to_bytes(k.codes));
    EXPECT_EQ(ops::to_bytes(m.scale), ops::to_bytes(k.scale));
    const ops::Fp8PerTensor t = made.transposed(s.w), kt = kept.transposed(s.w);
    EXPECT_EQ(t.codes.shape(), Shape({64, 96}));
    EXPECT_EQ(ops::to_bytes(t.codes), ops::to_bytes(k.codes_t));
    EXPECT_EQ(ops::to_bytes(kt.codes), ops::to_bytes(k.codes_t));
    EXPECT_EQ(ops::to_bytes(t.scale_inv), ops::to_bytes(k.scale_inv));
    EXPECT_EQ(kept.bytes() - made.bytes(), size_t{96 * 64});
    EXPECT_EQ(made.quantizations(), 1);  // transposed() reuses the copy: no second quantisation
  }
}

TEST(Fp8Weights, PutFollowsWhetherTransposesAreKept) {
  Weight s = make_weight(8);
  Fp8Weights source;
  const ops::Fp8PerTensor full = source.get(s.w);
  ops::Fp8PerTensor no_t = full;
  no_t.codes_t = Tensor();
  // Kept: a copy without codes_t is refused, naming the weight and what is missing.
  Fp8Weights kept;
  test::expect_error_containing([&] { kept.put(s.w, no_t); }, "down_proj");
  test::expect_error_containing([&] { kept.put(s.w, no_t); }, "codes_t [K, N]");
  // Not kept: a copy without codes_t is taken, and one with codes_t gives it up.
  Fp8Weights made;
  made.set_keep_transpose(false);
  made.put(s.w, no_t);
  EXPECT_EQ(ops::to_bytes(made.transposed(s.w).codes), ops::to_bytes(full.codes_t));
  made.put(s.w, full);
  EXPECT_FALSE(made.get(s.w).codes_t.defined());
  EXPECT_EQ(made.quantizations(), 0);
  // Switching drops every copy: the next get quantises.
  made.set_keep_transpose(true);
  EXPECT_EQ(made.bytes(), 0u);
  EXPECT_TRUE(made.get(s.w).codes_t.defined());
  EXPECT_EQ(made.quantizations(), 1);
}

TEST(Fp8Weights, EmptyMaximaAreRefusedNamingTheWeight) {
  Weight s = make_weight(6);
  Fp8Weights weights;
  test::expect_error_containing([&] { weights.put_maxima(s.w, Tensor()); }, "down_proj");
}

}  // namespace
}  // namespace coat::nn
