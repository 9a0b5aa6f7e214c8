// The precision recipes (models/precision_recipe.h) on the CPU backend, whose FP8 GEMM is the FP64 reference
// of the dequantised codes: the recipe table and its errors; fp8, fp8_block and coat give the loss and
// gradients of bf16 up to FP8 rounding; fp8 and fp8_block keep the bytes of bf16, coat exactly the bytes its
// compression policy says; the FP8 weight copies are made once per weight change, not per forward; per-layer
// BF16 overrides. fp8_block runs on a model whose linear widths and token count are multiples of 128 (its
// block edge); its per-element rounding is that of fp8 (the same formats; finer scales only keep small values
// further from underflow), so the same bounds apply, and its distance to bf16 is at most fp8's (+10%) there.
//
// Tolerances: loss within 1% of bf16; every unit's gradient within a relative L2 distance of 0.25 of bf16's.
// E5M2 rounds each gradient element by up to 2^-3 relative (rms 2^-3 / sqrt(3) = 7.2%), E4M3 each operand
// by up to 2^-4 (3.6%); the gradient of the embedding passes through three blocks of such GEMMs (dgrad and
// wgrad), so ~sqrt(3) * 7.2% = 12.5% plus the E4M3 terms is expected; measured 0.07 (head) .. 0.14 (embedding)
// under fp8, slightly less under coat. Both recipes must differ from bf16 somewhere (they really ran FP8).
// The model is initialised with std 0.05 (a typical regime: with std 0.2 the random logits are so peaked that
// any perturbation of the forward moves the loss by percents).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "coat/autograd/tape.h"
#include "coat/models/precision_recipe.h"
#include "coat/models/transformer.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/runtime.h"
#include "random_values.h"
#include "expect_error.h"

namespace coat::models {
namespace {

ModelConfig tiny() {
  ModelConfig c;
  c.architecture = Architecture::Llama;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.vocab_size = 50;
  c.max_position_embeddings = 32;
  c.initializer_range = 0.05;
  return c;
}

struct Pass {
  double loss = 0.0;
  size_t saved_bytes = 0;
  std::vector<std::vector<double>> grads;  // per unit
};

constexpr int64_t kBatch = 2, kSeq = 16;

Pass run(Transformer& model, const std::string& recipe, std::vector<int64_t> bf16_layers = {},
         int64_t batch = kBatch, int64_t seq = kSeq, bool compress_attention = false) {
  auto ctx = model.context();
  const test::TokenBatch batch_tokens = test::random_tokens(ctx, batch, seq, 50, 5);
  const Tensor& ids = batch_tokens.ids;
  const Tensor& targets = batch_tokens.targets;
  PrecisionRecipe r = make_recipe(recipe, bf16_layers, model.config().num_hidden_layers);
  r.compress_attention = compress_attention;
  model.set_recipe(r);
  model.zero_grad();
  Pass p;
  autograd::Tape tape;
  nn::LossOutput out = model.forward(tape, ids, targets, -1, 1.0 / static_cast<double>(ids.numel()));
  p.loss = out.read().loss_sum / static_cast<double>(ids.numel());
  p.saved_bytes = tape.saved_bytes();
  tape.backward(out.root, ops::full(ctx, {1}, 1.0, DType::F64));
  for (const ParamUnit& u : model.units()) p.grads.push_back(ops::to_double_vector(u.grad));
  return p;
}

double relative_l2(const std::vector<double>& a, const std::vector<double>& ref) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - ref[i]) * (a[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / den);
}

// precision.compress_attention: q, k, v compressed in every block; the output where the o projection keeps its
// own FP8 input instead (FP8 blocks), not where a BF16 o projection keeps the BF16 output anyway.
TEST(PrecisionRecipe, CompressedAttentionMovesTheOutputToTheOProjection) {
  for (const char* name : {"fp8", "fp8_block", "coat"}) {
    PrecisionRecipe r = make_recipe(name, {1}, 3);
    EXPECT_FALSE(r.compresses_attention_qkv(0)) << name;
    EXPECT_FALSE(r.compresses_attention_out(0)) << name;
    r.compress_attention = true;
    for (int64_t layer : {0, 1, 2}) {
      EXPECT_TRUE(r.compresses_attention_qkv(layer)) << name << " layer " << layer;
      EXPECT_EQ(r.compresses_attention_out(layer), layer != 1) << name << " layer " << layer;
      EXPECT_EQ(r.linear(layer, LinearRole::Out).save_fp8_input, layer != 1) << name << " layer " << layer;
    }
    EXPECT_TRUE(r.linear(0, LinearRole::Qkv).save_fp8_input) << name;
  }
  PrecisionRecipe bf16 = make_recipe("bf16", {}, 2);
  bf16.compress_attention = true;
  EXPECT_TRUE(bf16.compresses_attention_qkv(0));
  EXPECT_FALSE(bf16.compresses_attention_out(0));
}

TEST(PrecisionRecipe, TableAndErrors) {
  const PrecisionRecipe bf16 = make_recipe("bf16", {}, 4);
  EXPECT_FALSE(bf16.linear(0, LinearRole::Qkv).fp8);
  const PrecisionRecipe fp8 = make_recipe("fp8", {}, 4);
  EXPECT_TRUE(fp8.linear(2, LinearRole::Down).fp8);
  EXPECT_TRUE(fp8.linear(2, LinearRole::Down).save_fp8_input);  // the FP8 x^T of the forward, as coat
  EXPECT_FALSE(fp8.linear(2, LinearRole::Out).save_fp8_input);
  EXPECT_FALSE(fp8.compresses(2));
  const PrecisionRecipe coat = make_recipe("coat", {0, -1, -1}, 4);
  EXPECT_EQ(coat.bf16_layers, (std::vector<int64_t>{0, 3}));
  EXPECT_FALSE(coat.linear(0, LinearRole::Qkv).fp8);
  EXPECT_FALSE(coat.compresses(3));
  EXPECT_TRUE(coat.compresses(1));
  EXPECT_TRUE(coat.linear(1, LinearRole::Qkv).save_fp8_input);
  EXPECT_TRUE(coat.linear(1, LinearRole::Out).fp8);
  EXPECT_FALSE(coat.linear(1, LinearRole::Out).save_fp8_input);  // attention keeps its output anyway
  const PrecisionRecipe block = make_recipe("fp8_block", {1}, 4);
  EXPECT_TRUE(block.fp8_linears);
  EXPECT_TRUE(block.block_scaled);
  for (LinearRole role : {LinearRole::Qkv, LinearRole::Out, LinearRole::GateUp, LinearRole::Down}) {
    EXPECT_TRUE(block.linear(0, role).fp8);
    EXPECT_TRUE(block.linear(0, role).block_scaled);
    // The wgrad's 1x128 groups of x^T instead of x, but not o_proj's (attention keeps its input anyway).
    EXPECT_EQ(block.linear(0, role).save_fp8_input, role != LinearRole::Out);
    EXPECT_FALSE(block.linear(1, role).fp8);             // a bf16 layer
    EXPECT_FALSE(block.linear(1, role).block_scaled);
  }
  EXPECT_FALSE(block.compresses(0));
  EXPECT_FALSE(fp8.linear(2, LinearRole::Down).block_scaled);
  EXPECT_FALSE(coat.linear(1, LinearRole::Qkv).block_scaled);
  test::expect_error_containing<InvalidArgument>([] { make_recipe("fp4", {}, 4); }, "precision.recipe");
  test::expect_error_containing<InvalidArgument>([] { make_recipe("fp4", {}, 4); }, "fp8_block");
  test::expect_error_containing<InvalidArgument>([] { make_recipe("coat", {4}, 4); }, "precision.bf16_layers");
  test::expect_error_containing<InvalidArgument>([] { make_recipe("coat", {-5}, 4); }, "-5");
}

TEST(PrecisionRecipe, Fp8AndCoatFollowBf16) {
  auto ctx = ops::make_context(Device::cpu());
  Transformer model(tiny(), ctx, DType::F32, true, DType::BF16);
  model.init(11);
  const Pass bf16 = run(model, "bf16");
  const Pass fp8 = run(model, "fp8");
  const Pass coat = run(model, "coat");
  const Pass coat_attn8 = run(model, "coat", {}, kBatch, kSeq, /*compress_attention=*/true);
  for (const auto& [name, p] : {std::pair{"fp8", &fp8}, {"coat", &coat}, {"coat:attn8", &coat_attn8}}) {
    SCOPED_TRACE(name);
    std::printf("[recipe] %s: loss %.6f (bf16 %.6f)\n", name, p->loss, bf16.loss);
    EXPECT_NEAR(p->loss, bf16.loss, 0.01 * bf16.loss);
    for (size_t u = 0; u < bf16.grads.size(); ++u) {
      const double err = relative_l2(p->grads[u], bf16.grads[u]);
      std::printf("[recipe] %s: %-24s gradient relative L2 %.4f\n", name, model.units()[u].name.c_str(), err);
      EXPECT_LE(err, 0.25) << model.units()[u].name;
      EXPECT_GT(err, 0.0) << model.units()[u].name << ": FP8 should change something";
    }
  }
  // fp8 keeps, per block and token, the qkv, gate/up and down inputs as the FP8 transposes of the forward (1 byte
  // instead of 2 per element) plus two one-element F32 scales for each of the three; coat keeps instead of BF16
  // copies: the two norm inputs as FP8 with 1x16 scales (1.25 bytes instead of 2 per element), the qkv and
  // gate/up inputs as FP8 transposes (1 instead of 2), the SwiGLU input [2F] as FP8 with 1x16 scales, the down
  // input [F] as FP8; plus the same scales.
  const size_t tokens = kBatch * kSeq, h = 64, f = 96, layers = 3;
  EXPECT_EQ(bf16.saved_bytes - fp8.saved_bytes, layers * (tokens * (2 * h + f) - 3 * 8));
  const size_t saved_less = layers * (tokens * (2 * 3 * h / 4 + 2 * h + 3 * f / 2 + f) - 3 * 8);
  EXPECT_EQ(bf16.saved_bytes - coat.saved_bytes, saved_less);
  // precision.compress_attention: q, k, v [h + 2 kv] and the output [h] as FP8 with 1x16 scales (0.75 bytes
  // less per element), while the o projection keeps its own FP8 transposed input [h] and its two scales.
  const size_t kv = 2 * h / 4;
  const size_t attention_less = layers * (tokens * ((h + 2 * kv + h) * 3 / 4 - h) - 2 * 4);
  EXPECT_EQ(coat.saved_bytes - coat_attn8.saved_bytes, attention_less);
}

// Linear widths (hidden 128, q/k/v 128 + 2 * 64, gate/up 2 * 256, down in 256) and tokens (2 x 64) are
// multiples of 128, as 128-block scaling needs.
ModelConfig tiny_blocked() {
  ModelConfig c = tiny();
  c.hidden_size = 128;
  c.intermediate_size = 256;
  c.num_hidden_layers = 2;
  c.max_position_embeddings = 64;
  return c;
}
constexpr int64_t kBlockedSeq = 64;

TEST(PrecisionRecipe, Fp8BlockFollowsBf16) {
  auto ctx = ops::make_context(Device::cpu());
  Transformer model(tiny_blocked(), ctx, DType::F32, true, DType::BF16);
  model.init(11);
  const Pass bf16 = run(model, "bf16", {}, kBatch, kBlockedSeq);
  const Pass block = run(model, "fp8_block", {}, kBatch, kBlockedSeq);
  EXPECT_EQ(model.store().fp8_block_quantizations(), 4 * 2);
  EXPECT_EQ(model.store().fp8_quantizations(), 0);  // the per-tensor cache is not used
  const Pass tensorwise = run(model, "fp8", {}, kBatch, kBlockedSeq);
  std::printf("[recipe] fp8_block: loss %.6f (bf16 %.6f, fp8 %.6f)\n", block.loss, bf16.loss, tensorwise.loss);
  EXPECT_NEAR(block.loss, bf16.loss, 0.01 * bf16.loss);
  for (size_t u = 0; u < bf16.grads.size(); ++u) {
    const double err = relative_l2(block.grads[u], bf16.grads[u]);
    const double err_fp8 = relative_l2(tensorwise.grads[u], bf16.grads[u]);
    std::printf("[recipe] fp8_block: %-24s gradient relative L2 %.4f (fp8 %.4f)\n", model.units()[u].name.c_str(),
                err, err_fp8);
    EXPECT_LE(err, 0.25) << model.units()[u].name;
    EXPECT_GT(err, 0.0) << model.units()[u].name << ": FP8 should change something";
    // The same formats with finer scales: no less accurate than per-tensor fp8 (10% for which elements happen
    // to cross a rounding boundary; measured 0.91 .. 0.97 of fp8's distance).
    EXPECT_LE(err, 1.1 * err_fp8) << model.units()[u].name;
  }
  // The linear inputs kept as E4M3 1x128 groups (not o_proj's): fewer bytes than BF16.
  EXPECT_LT(block.saved_bytes, bf16.saved_bytes);
  // Blocks in bf16_layers take any shape; the others refuse a token count that is not a multiple of 128.
  const Pass mixed = run(model, "fp8_block", {0}, kBatch, kBlockedSeq);
  EXPECT_EQ(model.store().fp8_block_quantizations(), 4 * 2 + 4);  // block 1 only
  EXPECT_NE(mixed.loss, block.loss);
  test::expect_error_containing<InvalidArgument>([&] { run(model, "fp8_block", {}, kBatch, 32); },
                                                 "precision.bf16_layers");
}

TEST(PrecisionRecipe, Fp8WeightsQuantisedOncePerWeightChange) {
  auto ctx = ops::make_context(Device::cpu());
  Transformer model(tiny(), ctx, DType::F32, true, DType::BF16);
  model.init(3);
  run(model, "coat");  // set_recipe counts as a change
  const int64_t linears = 4 * 3;
  EXPECT_EQ(model.store().fp8_quantizations(), linears);
  const Pass again = run(model, "coat");  // set_recipe again: a change
  EXPECT_EQ(model.store().fp8_quantizations(), 2 * linears);
  // Two more passes under the same recipe without a weight change: no new copies.
  model.zero_grad();
  for (int i = 0; i < 2; ++i) {
    autograd::Tape tape;
    const Tensor ids = ops::from_vector(ctx, {kBatch, kSeq}, DType::I32, std::vector<double>(kBatch * kSeq, 7.0));
    nn::LossOutput out = model.forward(tape, ids, ids, -1, 1.0);
    tape.backward(out.root, ops::full(ctx, {1}, 1.0, DType::F64));
  }
  EXPECT_EQ(model.store().fp8_quantizations(), 2 * linears);
  model.weights_changed();
  run(model, "coat", {0, 2});  // only block 1 in FP8 now
  EXPECT_EQ(model.store().fp8_quantizations(), 2 * linears + 4);
  (void)again;
}

TEST(PrecisionRecipe, Fp8RecipesNeedBf16Compute) {
  auto ctx = ops::make_context(Device::cpu());
  Transformer model(tiny(), ctx, DType::F32, true);
  test::expect_error_containing<InvalidArgument>([&] { model.set_recipe(make_recipe("coat", {}, 3)); }, "BF16");
}

}  // namespace
}  // namespace coat::models
