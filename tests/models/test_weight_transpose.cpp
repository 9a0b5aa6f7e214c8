// precision.cache_weight_transpose = false (PrecisionRecipe::keep_weight_transpose): the per-tensor FP8 weight
// caches keep W's E4M3 codes only, and each dgrad takes a W^T made from them in the backward. Against keeping
// W^T: bit-identical loss, gradients of every unit and logits, for Llama (grouped KV heads, untied head) and
// OLMo (LayerNorm, tied head), under fp8 and coat (also with a block in BF16, with compressed attention and
// with q, k and v made again); the tape saves the same bytes, and the caches hold exactly one byte per FP8
// weight element less. fp8_block, which keeps 128x128-blocked transposes, is refused naming the setting.
#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

#include "coat/models/precision_recipe.h"
#include "coat/models/transformer.h"
#include "coat/ops/runtime.h"
#include "expect_error.h"
#include "models/model_pass.h"
#include "random_values.h"

namespace coat::models {
namespace {

using test::Pass;

// A recipe name, optionally "_attn8" (precision.compress_attention) or "_bf16block" (block 1 in BF16).
PrecisionRecipe recipe_of(const std::string& spec, int64_t layers, bool keep_transpose) {
  const std::string name = spec.substr(0, spec.find('_'));
  const bool bf16_block = spec.ends_with("_bf16block");
  PrecisionRecipe r = make_recipe(name, bf16_block ? std::vector<int64_t>{1} : std::vector<int64_t>{}, layers);
  r.compress_attention = spec.ends_with("_attn8");
  r.keep_weight_transpose = keep_transpose;
  return r;
}

size_t cache_bytes(Transformer& model) {
  size_t total = 0;
  for (size_t u = 0; u < model.units().size(); ++u)
    total += model.store().fp8_weights(u).bytes();
  return total;
}

using Case = std::tuple<Architecture, std::string, Recompute>;

class WeightTransposeOnUse : public ::testing::TestWithParam<Case> {};

TEST_P(WeightTransposeOnUse, GradientsAreBitIdenticalAndTheCacheHoldsWOnly) {
  const auto& [arch, spec, recompute] = GetParam();
  const ModelConfig config = test::tiny_model(arch, 0.05);
  auto ctx = ops::make_context(Device::cpu());
  const int64_t batch = 2, seq = 16;
  const test::TokenBatch tokens = test::random_tokens(ctx, batch, seq, 50, 9);
  const auto pass = [&](bool keep, size_t* cache) {
    Transformer model(config, ctx, DType::F32, true, DType::BF16);
    model.init(5);
    model.set_recipe(recipe_of(spec, config.num_hidden_layers, keep));
    model.set_recompute(recompute);
    Pass p = test::run_pass(model, tokens.ids, tokens.targets);
    *cache = cache_bytes(model);
    return p;
  };
  size_t kept_cache = 0, made_cache = 0;
  const Pass kept = pass(true, &kept_cache), made = pass(false, &made_cache);
  EXPECT_EQ(made.loss, kept.loss);
  ASSERT_EQ(made.grads.size(), kept.grads.size());
  for (size_t u = 0; u < kept.grads.size(); ++u) EXPECT_TRUE(made.grads[u] == kept.grads[u]) << "unit " << u;
  EXPECT_TRUE(made.logits == kept.logits);
  EXPECT_EQ(made.saved_bytes, kept.saved_bytes);
  // One E4M3 byte per element of each FP8 block's four weights (qkv, o, gate/up, down) less.
  const auto per_block = static_cast<size_t>(
      (config.hidden_size + 2 * config.num_key_value_heads * config.head_dim()) * config.hidden_size +
      config.hidden_size * config.hidden_size + 3 * config.intermediate_size * config.hidden_size);
  const size_t fp8_blocks = static_cast<size_t>(config.num_hidden_layers) - (spec.ends_with("_bf16block") ? 1 : 0);
  EXPECT_GT(kept_cache, 0u);
  EXPECT_EQ(kept_cache - made_cache, fp8_blocks * per_block);
}

INSTANTIATE_TEST_SUITE_P(
    Recipes, WeightTransposeOnUse,
    ::testing::Combine(::testing::Values(Architecture::Llama, Architecture::Olmo),
                       ::testing::Values("fp8", "coat", "coat_attn8", "coat_bf16block"),
                       ::testing::Values(Recompute::None, Recompute::Qkv, Recompute::Blocks)),
    [](const ::testing::TestParamInfo<Case>& info) {
      return std::string(std::get<0>(info.param) == Architecture::Llama ? "Llama" : "Olmo") + "_" +
             std::get<1>(info.param) + "_recompute_" + std::string(to_string(std::get<2>(info.param)));
    });

// fp8_block keeps 128x128-blocked transposes (nn::Fp8BlockWeights): making W^T in the backward is refused there,
// with a message that names the setting, and the model keeps its recipe.
TEST(WeightTransposeOnUseRefused, UnderBlockScaling) {
  const ModelConfig config = test::tiny_model(Architecture::Olmo, 0.05);
  Transformer model(config, ops::make_context(Device::cpu()), DType::F32, true, DType::BF16);
  model.set_recipe(make_recipe("coat", {}, config.num_hidden_layers));
  PrecisionRecipe blocked = make_recipe("fp8_block", {}, config.num_hidden_layers);
  blocked.keep_weight_transpose = false;
  test::expect_error_containing([&] { model.set_recipe(blocked); }, "precision.cache_weight_transpose = false");
  EXPECT_EQ(model.recipe().name, "coat");
}

}  // namespace
}  // namespace coat::models
