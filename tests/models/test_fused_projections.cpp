// The block's fused projections: [q; k; v] and [gate; up] lie in the unit without padding between them and
// are viewed as one matrix each (value, master, grad), outside parameters(); the model (one GEMM per fused
// projection, packed attention and SwiGLU) computes the loss, logits and parameter gradients that the
// unfused block (three and two GEMMs, rope, attention, swiglu on separate tensors) computes, in F64 on the
// CPU: relative 1e-12 (only the GEMMs' summation order may differ), keeping as many bytes for the backward.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "coat/autograd/tape.h"
#include "coat/models/transformer.h"
#include "coat/models/unit_layout.h"
#include "coat/nn/activation.h"
#include "coat/nn/attention.h"
#include "coat/nn/embedding.h"
#include "coat/nn/linear.h"
#include "coat/nn/loss.h"
#include "coat/nn/norm.h"
#include "coat/nn/residual.h"
#include "coat/nn/rope.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/runtime.h"
#include "random_values.h"

namespace coat::models {
namespace {

/// Small enough that the k, v and up projections are not multiples of 64 elements (they were padded).
ModelConfig tiny(Architecture arch) {
  ModelConfig c;
  c.architecture = arch;
  c.hidden_size = 12;
  c.intermediate_size = 10;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 3;
  c.num_key_value_heads = arch == Architecture::Llama ? 1 : 3;
  c.vocab_size = 17;
  c.max_position_embeddings = 16;
  c.tie_word_embeddings = arch == Architecture::Olmo;
  c.initializer_range = 0.4;
  return c;
}

TEST(FusedProjections, ViewTheConsecutiveProjectionsOfEachBlock) {
  auto ctx = ops::make_context(Device::cpu());
  for (auto compute : {std::optional<DType>(), std::optional<DType>(DType::BF16)}) {
    const ModelConfig config = tiny(Architecture::Llama);
    Transformer model(config, ctx, DType::F32, true, compute);
    model.init(3);
    const int64_t h = config.hidden_size, kv = config.num_key_value_heads * config.head_dim();
    const int64_t f = config.intermediate_size;
    for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
      const std::string p = "model.layers." + std::to_string(layer) + ".";
      const FusedProjections& fused = model.store().fused_projections(layer);
      EXPECT_EQ(fused.qkv.name, p + "self_attn.qkv_proj.weight");
      EXPECT_EQ(fused.gate_up.name, p + "mlp.gate_up_proj.weight");
      EXPECT_EQ(fused.qkv.value.shape(), Shape({h + 2 * kv, h}));
      EXPECT_EQ(fused.gate_up.value.shape(), Shape({2 * f, h}));
      EXPECT_EQ(fused.qkv.value.dtype(), model.compute_dtype());
      EXPECT_EQ(fused.qkv.master.dtype(), DType::F32);
      EXPECT_EQ(fused.qkv.grad.dtype(), DType::F32);
      auto expect_concat = [&](const nn::Parameter& whole, const std::vector<std::string>& parts) {
        int64_t row = 0;
        for (const std::string& name : parts) {
          const nn::Parameter& part = model.parameter(name);
          const int64_t rows = part.value.size(0);
          for (auto [w, t] : {std::pair{&whole.value, &part.value},
                              {&whole.master, &part.master},
                              {&whole.grad, &part.grad}}) {
            const Tensor piece = w->slice(0, row, row + rows);
            EXPECT_TRUE(piece.shares_storage_with(*t)) << name;
            EXPECT_EQ(piece.data_ptr(), t->data_ptr()) << name;
          }
          EXPECT_EQ(ops::to_bytes(whole.value.slice(0, row, row + rows)), ops::to_bytes(part.value)) << name;
          row += rows;
        }
        EXPECT_EQ(row, whole.value.size(0));
      };
      expect_concat(fused.qkv, {p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight",
                                p + "self_attn.v_proj.weight"});
      expect_concat(fused.gate_up, {p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"});
    }
    // parameters() holds the HF names only, in HF order.
    for (const nn::Parameter& p : model.parameters()) {
      EXPECT_EQ(p.name.find("qkv_proj"), std::string::npos);
      EXPECT_EQ(p.name.find("gate_up_proj"), std::string::npos);
    }
    EXPECT_EQ(model.parameters().size(), 1 + config.num_hidden_layers * 9 + 2);
    EXPECT_EQ(model.parameters()[1].name, "model.layers.0.self_attn.q_proj.weight");
    EXPECT_EQ(model.parameters()[3].name, "model.layers.0.self_attn.v_proj.weight");
  }
}

TEST(FusedProjections, UnitLayoutPadsOnlyAfterTheFusedGroups) {
  const ModelConfig config = tiny(Architecture::Llama);
  const std::vector<UnitLayout> units = unit_layouts(config);
  const UnitLayout& block = units.at(1);
  ASSERT_EQ(block.name, "layers.0");
  const int64_t h = config.hidden_size, kv = config.num_key_value_heads * config.head_dim();
  const int64_t f = config.intermediate_size;
  auto align = [](int64_t n) {
    return (n + kUnitAlignElements - 1) / kUnitAlignElements * kUnitAlignElements;
  };
  // q, k, v, o, gate, up, down, input norm, post-attention norm.
  const std::vector<int64_t> expected = {0,
                                         h * h,
                                         h * h + kv * h,
                                         align(h * h + 2 * kv * h),
                                         align(h * h + 2 * kv * h) + align(h * h),
                                         align(h * h + 2 * kv * h) + align(h * h) + f * h,
                                         align(h * h + 2 * kv * h) + align(h * h) + align(2 * f * h)};
  for (size_t i = 0; i < expected.size(); ++i)
    EXPECT_EQ(block.offsets.at(i), expected[i]) << block.params[i].first;
  // Every parameter but k, v (after q) and up (after gate) starts on a boundary.
  for (size_t i : {0, 3, 4, 6, 7, 8})
    EXPECT_EQ(block.offsets.at(i) % kUnitAlignElements, 0) << block.params[i].first;
  EXPECT_EQ(block.numel % kUnitAlignElements, 0);
}

/// The block as it was before fusing: separate q, k, v and gate, up projections.
autograd::Var unfused_block(autograd::Tape& tape, Transformer& model, int64_t layer, const autograd::Var& x) {
  const ModelConfig& c = model.config();
  const std::string p = "model.layers." + std::to_string(layer) + ".";
  const int64_t batch = x.shape()[0], seq = x.shape()[1];
  const int64_t hq = c.num_attention_heads, hkv = c.num_key_value_heads, dh = c.head_dim();
  auto norm = [&](const autograd::Var& in, const std::string& w) {
    return c.norms_have_weights() ? nn::rms_norm(tape, in, &model.parameter(w), c.rms_norm_eps)
                                  : nn::layer_norm(tape, in, 1e-5);
  };
  auto proj = [&](const autograd::Var& in, const std::string& w) {
    return nn::linear(tape, in, model.parameter(p + w));
  };
  autograd::Var a = norm(x, p + "input_layernorm.weight");
  autograd::Var q = nn::reshape(tape, proj(a, "self_attn.q_proj.weight"), {batch, seq, hq, dh});
  autograd::Var k = nn::reshape(tape, proj(a, "self_attn.k_proj.weight"), {batch, seq, hkv, dh});
  autograd::Var v = nn::reshape(tape, proj(a, "self_attn.v_proj.weight"), {batch, seq, hkv, dh});
  q = nn::rope(tape, q, c.rope_theta);
  k = nn::rope(tape, k, c.rope_theta);
  autograd::Var o = nn::attention(tape, q, k, v, 1.0 / std::sqrt(static_cast<double>(dh)));
  o = nn::reshape(tape, o, {batch, seq, hq * dh});
  autograd::Var h = nn::add(tape, x, proj(o, "self_attn.o_proj.weight"));
  autograd::Var m = norm(h, p + "post_attention_layernorm.weight");
  autograd::Var g = proj(m, "mlp.gate_proj.weight");
  autograd::Var u = proj(m, "mlp.up_proj.weight");
  return nn::add(tape, h, proj(nn::swiglu(tape, g, u), "mlp.down_proj.weight"));
}

autograd::Var unfused_logits(autograd::Tape& tape, Transformer& model, const Tensor& ids) {
  const ModelConfig& c = model.config();
  autograd::Var x = nn::embedding(tape, model.parameter("model.embed_tokens.weight"), ids);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) x = unfused_block(tape, model, i, x);
  x = c.norms_have_weights() ? nn::rms_norm(tape, x, &model.parameter("model.norm.weight"), c.rms_norm_eps)
                             : nn::layer_norm(tape, x, 1e-5);
  nn::Parameter& head = c.tie_word_embeddings ? model.parameter("model.embed_tokens.weight")
                                              : model.parameter("lm_head.weight");
  return nn::linear(tape, x, head);
}

nn::LossOutput unfused_forward(autograd::Tape& tape, Transformer& model, const Tensor& ids,
                               const Tensor& targets, double scale) {
  return nn::cross_entropy(tape, unfused_logits(tape, model, ids), targets, -1, scale, tape.grad_enabled());
}

void expect_near_rel(const std::vector<double>& got, const std::vector<double>& want,
                     const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double max_abs = 0.0;
  for (double w : want) max_abs = std::max(max_abs, std::abs(w));
  ASSERT_GT(max_abs, 0.0) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], 1e-12 * max_abs) << what << " element " << i;
  }
}

class FusedModel : public ::testing::TestWithParam<Architecture> {};

TEST_P(FusedModel, EqualsTheUnfusedBlock) {
  auto ctx = ops::make_context(Device::cpu());
  const ModelConfig config = tiny(GetParam());
  Transformer model(config, ctx, DType::F64, true);
  model.init(7);
  RandomGenerator norm_gen{9, 0};
  for (auto& p : model.parameters()) {
    if (p.value.dim() == 1) ops::uniform_(p.value, norm_gen, 0.5f, 1.5f);
  }
  const int64_t batch = 2, seq = 6;
  const test::TokenBatch batch_tokens = test::random_tokens(ctx, batch, seq, 17, 4);
  const Tensor& ids = batch_tokens.ids;
  const Tensor& targets = batch_tokens.targets;
  const double scale = 1.0 / static_cast<double>(batch * seq);

  model.zero_grad();
  autograd::Tape tape;
  nn::LossOutput fused = model.forward(tape, ids, targets, -1, scale);
  const size_t fused_saved = tape.saved_bytes();
  tape.backward(fused.root, ops::full(ctx, {1}, 1.0, DType::F64));
  std::vector<std::vector<double>> fused_grads;
  for (const nn::Parameter& p : model.parameters()) fused_grads.push_back(ops::to_double_vector(p.grad));

  model.zero_grad();
  autograd::Tape ref_tape;
  nn::LossOutput ref = unfused_forward(ref_tape, model, ids, targets, scale);
  // The packed nodes keep the bytes the separate ones kept: qkv = q + k + v, gu = gate + up.
  EXPECT_EQ(fused_saved, ref_tape.saved_bytes());
  ref_tape.backward(ref.root, ops::full(ctx, {1}, 1.0, DType::F64));

  EXPECT_NEAR(fused.read().loss_sum, ref.read().loss_sum, 1e-12 * std::abs(ref.read().loss_sum));
  for (size_t i = 0; i < model.parameters().size(); ++i) {
    const nn::Parameter& p = model.parameters()[i];
    expect_near_rel(fused_grads[i], ops::to_double_vector(p.grad), p.name);
  }
  // Forward only (generation's path): the logits.
  autograd::Tape eval(false);
  const Tensor logits = model.logits(ids);
  EXPECT_EQ(logits.shape(), Shape({batch, seq, config.vocab_size}));
  expect_near_rel(ops::to_double_vector(logits),
                  ops::to_double_vector(unfused_logits(eval, model, ids).value), "logits");
}

// Not a test: forward + backward of a TinyLlama-shaped model (4 of its blocks; B = 8, T = 2048, BF16
// compute) on CUDA with the fused block and with the unfused reference block, median of 10 steps after 3
// warm-up steps each. Run with --gtest_also_run_disabled_tests on a GPU.
TEST(FusedProjections, DISABLED_TimeFusedAgainstUnfusedOnCuda) {
  if (ops::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  auto gpu = ops::make_context(Device::cuda(0));
  ModelConfig c;
  c.hidden_size = 2048;
  c.intermediate_size = 5632;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 32;
  c.num_key_value_heads = 4;
  c.vocab_size = 32000;
  c.max_position_embeddings = 2048;
  c.initializer_range = 0.02;
  Transformer model(c, gpu, DType::F32, true, DType::BF16);
  model.init(1);
  const int64_t batch = 8, seq = 2048;
  const test::TokenBatch batch_tokens = test::random_tokens(gpu, batch, seq, 32000, 2);
  const Tensor& ids = batch_tokens.ids;
  const Tensor& targets = batch_tokens.targets;
  const double scale = 1.0 / static_cast<double>(batch * seq);
  auto step = [&](bool fused) {
    model.zero_grad();
    autograd::Tape tape;
    nn::LossOutput out = fused ? model.forward(tape, ids, targets, -1, scale)
                               : unfused_forward(tape, model, ids, targets, scale);
    tape.backward(out.root, ops::full(gpu, {1}, 1.0, DType::F64));
    gpu->synchronize();
    return out.read().loss_sum * scale;
  };
  auto median_ms = [&](bool fused) {
    for (int i = 0; i < 3; ++i) step(fused);
    std::vector<double> ms;
    for (int i = 0; i < 10; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      step(fused);
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  };
  const double loss_fused = step(true), loss_unfused = step(false);
  EXPECT_NEAR(loss_fused, loss_unfused, 1e-2 * std::abs(loss_unfused));
  const double unfused = median_ms(false), fused = median_ms(true);
  std::printf("  loss fused %.6f unfused %.6f\n", loss_fused, loss_unfused);
  std::printf(
      "  forward+backward, 4 TinyLlama blocks, B=8 T=2048 bf16: unfused %.2f ms, fused %.2f ms (%.1f%% "
      "less)\n",
      unfused, fused, 100.0 * (unfused - fused) / unfused);
}

INSTANTIATE_TEST_SUITE_P(Architectures, FusedModel,
                         ::testing::Values(Architecture::Llama, Architecture::Olmo),
                         [](const ::testing::TestParamInfo<Architecture>& info) {
                           return info.param == Architecture::Llama ? std::string("Llama")
                                                                    : std::string("Olmo");
                         });

}  // namespace
}  // namespace coat::models
