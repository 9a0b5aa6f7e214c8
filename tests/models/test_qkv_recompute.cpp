// train.recompute = qkv (Recompute::Qkv): each block's attention keeps no q, k and v; its backward makes them
// again from the input the q/k/v projection keeps (BF16 x, or the FP8 transposed codes and scale) through the
// forward's GEMM and RoPE. Against keeping them: bit-identical loss, gradients of every unit and logits, for
// Llama (grouped KV heads, untied head) and OLMo (LayerNorm, tied head), under fp32, bf16, fp8 and coat (also
// with a block in BF16); the tape keeps exactly q, k and v less per block, also under
// precision.compress_attention, whose q, k and v are then made again (exact) instead of kept compressed. fp8_block, whose saved input is grouped
// along the tokens, is refused with a message that names the setting.
#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

#include "coat/models/precision_recipe.h"
#include "coat/models/transformer.h"
#include "coat/nn/compressed_save.h"
#include "coat/ops/runtime.h"
#include "expect_error.h"
#include "models/model_pass.h"
#include "random_values.h"

namespace coat::models {
namespace {

using test::Pass;

// A recipe name, optionally "+attn8" (precision.compress_attention) or "+bf16block" (block 1 in BF16).
PrecisionRecipe recipe_of(const std::string& spec, int64_t layers) {
  const std::string name = spec.substr(0, spec.find('+'));
  const bool bf16_block = spec.ends_with("+bf16block");
  PrecisionRecipe r = make_recipe(name == "fp32" ? "bf16" : name,
                                  bf16_block ? std::vector<int64_t>{1} : std::vector<int64_t>{}, layers);
  r.compress_attention = spec.ends_with("+attn8");
  return r;
}

using Case = std::tuple<Architecture, std::string>;

class QkvRecompute : public ::testing::TestWithParam<Case> {};

TEST_P(QkvRecompute, GradientsAreBitIdenticalAndQKVAreNotKept) {
  const auto& [arch, spec] = GetParam();
  const ModelConfig config = test::tiny_model(arch, 0.05);
  auto ctx = ops::make_context(Device::cpu());
  const DType compute = spec == "fp32" ? DType::F32 : DType::BF16;
  Transformer model(config, ctx, DType::F32, true, compute);
  model.init(5);
  model.set_recipe(recipe_of(spec, config.num_hidden_layers));
  const int64_t batch = 2, seq = 16;
  const test::TokenBatch tokens = test::random_tokens(ctx, batch, seq, 50, 9);

  model.set_recompute(Recompute::None);
  const Pass keep = test::run_pass(model, tokens.ids, tokens.targets);
  model.set_recompute(Recompute::Qkv);
  const Pass again = test::run_pass(model, tokens.ids, tokens.targets);
  // Kept compressed (+attn8), q, k and v enter the attention as restored from E4M3; made again they are the
  // projection's exact output: the loss moves, and only the bytes are compared.
  const bool compressed = spec.ends_with("+attn8");
  if (!compressed) {
    EXPECT_EQ(again.loss, keep.loss);
    ASSERT_EQ(again.grads.size(), keep.grads.size());
    for (size_t u = 0; u < keep.grads.size(); ++u)
      EXPECT_TRUE(again.grads[u] == keep.grads[u]) << model.units()[u].name << ": gradient bytes differ";
  } else {
    EXPECT_NE(again.loss, keep.loss);
  }
  EXPECT_TRUE(again.logits == keep.logits);

  // Per block, q, k and v: (hidden + 2 kv) values per token, or their E4M3 codes with one F32 scale per
  // 16 (compressed); what makes them again is what the projection keeps anyway.
  const auto n = static_cast<size_t>(batch * seq);
  const auto qkv = static_cast<size_t>(config.hidden_size + 2 * config.num_key_value_heads * config.head_dim());
  const size_t per_block = compressed ? n * qkv + n * qkv / nn::kCompressGroup * 4 : n * qkv * dtype_size(compute);
  EXPECT_EQ(keep.saved_bytes - again.saved_bytes, static_cast<size_t>(config.num_hidden_layers) * per_block);
}

INSTANTIATE_TEST_SUITE_P(
    Recipes, QkvRecompute,
    ::testing::Combine(::testing::Values(Architecture::Llama, Architecture::Olmo),
                       ::testing::Values("fp32", "bf16", "fp8", "coat", "coat+attn8", "coat+bf16block")),
    [](const ::testing::TestParamInfo<Case>& info) {
      std::string name = std::string(std::get<0>(info.param) == Architecture::Llama ? "Llama" : "Olmo") + "_" +
                         std::get<1>(info.param);
      for (char& c : name)
        if (c == '+') c = '_';
      return name;
    });

// fp8_block's q/k/v projection keeps its input as 1x128 groups along the tokens, not the forward's groups
// along the features: Recompute::Qkv is refused, whichever is set first, and the model keeps its settings.
TEST(QkvRecomputeRefused, UnderBlockScaling) {
  ModelConfig config = test::tiny_model(Architecture::Llama, 0.05);
  config.hidden_size = 128;
  config.intermediate_size = 128;
  auto ctx = ops::make_context(Device::cpu());
  Transformer model(config, ctx, DType::F32, true, DType::BF16);
  model.set_recipe(make_recipe("fp8_block", {}, config.num_hidden_layers));
  test::expect_error_containing([&] { model.set_recompute(Recompute::Qkv); },
                                "train.recompute = qkv makes q, k and v again from the input the q/k/v projection "
                                "keeps, but under the fp8_block recipe block 0 keeps it as 1x128 groups");
  EXPECT_EQ(model.recompute(), Recompute::None);
  model.set_recipe(make_recipe("coat", {}, config.num_hidden_layers));
  model.set_recompute(Recompute::Qkv);
  test::expect_error_containing([&] { model.set_recipe(make_recipe("fp8_block", {}, config.num_hidden_layers)); },
                                "under the fp8_block recipe block 0");
  EXPECT_EQ(model.recompute(), Recompute::Qkv);
  // Every block in BF16: nothing is block scaled.
  model.set_recipe(make_recipe("fp8_block", {0, 1, 2}, config.num_hidden_layers));
}

}  // namespace
}  // namespace coat::models
