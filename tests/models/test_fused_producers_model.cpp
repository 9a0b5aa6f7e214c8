// The fused producers of Transformer::block (row maxima from the norms and the SwiGLU for the per-tensor FP8
// linears; under coat the residual add's compressed copy for the MLP norm) against the unfused path
// (set_fused_producers(false)): bit-identical loss, gradients of every unit, logits and saved bytes, under the
// fp8 and coat recipes (and the backward producers hand their maxima to every FP8 linear that takes them), for Llama (RMSNorm, grouped KV heads, untied head) and OLMo (LayerNorm, tied head),
// with and without recomputation (of the blocks, or of q, k and v), with a block kept in BF16. On the CPU backend every fused kernel computes
// the same values in the same roundings as the ops it replaces, so nothing may change by a bit.
#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

#include "coat/autograd/tape.h"
#include "coat/models/precision_recipe.h"
#include "coat/models/transformer.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/runtime.h"
#include "models/model_pass.h"
#include "random_values.h"

namespace coat::models {
namespace {

using test::Pass;

ModelConfig tiny(Architecture arch) { return test::tiny_model(arch, 0.05); }

Pass run(Transformer& model, bool fused, const Tensor& ids, const Tensor& targets) {
  model.set_fused_producers(fused);
  return test::run_pass(model, ids, targets);
}

using Case = std::tuple<Architecture, std::string, Recompute, bool>;  // arch, recipe, recompute, block 1 in bf16

class FusedProducersModel : public ::testing::TestWithParam<Case> {};

TEST_P(FusedProducersModel, LossGradientsAndSavedBytesAreBitIdentical) {
  const auto& [arch, recipe, recompute, bf16_block] = GetParam();
  auto ctx = ops::make_context(Device::cpu());
  Transformer model(tiny(arch), ctx, DType::F32, true, DType::BF16);
  model.init(7);
  model.set_recipe(make_recipe(recipe, bf16_block ? std::vector<int64_t>{1} : std::vector<int64_t>{}, 3));
  model.set_recompute(recompute);
  const int64_t batch = 2, seq = 16;
  const test::TokenBatch batch_tokens = test::random_tokens(ctx, batch, seq, 50, 3);
  const Tensor& ids = batch_tokens.ids;
  const Tensor& targets = batch_tokens.targets;

  const Pass unfused = run(model, false, ids, targets);
  EXPECT_EQ(model.grad_maxima_counts().hits + model.grad_maxima_counts().misses, 0) << "slots without fusion";
  const Pass fused = run(model, true, ids, targets);
  // Every FP8 block's q/k/v, o_proj and gate/up linears took their gradients' maxima from the inverse RoPE,
  // the MLP norm (with the residual sum) and the SwiGLU, and its down linear from the next block's input norm
  // (with the residual sum; not the last block's, whose gradient comes from the final norm). Recomputed blocks
  // too: the gradient crosses the checkpoint as the same tensor.
  const int64_t layers = tiny(arch).num_hidden_layers;
  const auto fp8_block = [&](int64_t layer) { return !(bf16_block && layer == 1); };
  int64_t expected = 0;
  for (int64_t layer = 0; layer < layers; ++layer)
    expected += fp8_block(layer) ? 3 + (layer + 1 < layers ? 1 : 0) : 0;
  EXPECT_EQ(model.grad_maxima_counts().hits, expected);
  EXPECT_EQ(model.grad_maxima_counts().misses, 0);
  EXPECT_EQ(fused.loss, unfused.loss);
  EXPECT_EQ(fused.saved_bytes, unfused.saved_bytes);
  ASSERT_EQ(fused.grads.size(), unfused.grads.size());
  for (size_t u = 0; u < unfused.grads.size(); ++u)
    EXPECT_TRUE(fused.grads[u] == unfused.grads[u]) << model.units()[u].name << ": gradient bytes differ";
  EXPECT_TRUE(fused.logits == unfused.logits) << "logits differ";
  // The default is the fused path.
  Transformer fresh(tiny(arch), ctx, DType::F32, true, DType::BF16);
  fresh.init(7);
  fresh.set_recipe(make_recipe(recipe, bf16_block ? std::vector<int64_t>{1} : std::vector<int64_t>{}, 3));
  fresh.set_recompute(recompute);
  fresh.zero_grad();
  autograd::Tape tape;
  EXPECT_EQ(fresh.forward(tape, ids, targets, -1, 1.0 / static_cast<double>(ids.numel())).read().loss_sum, fused.loss);
}

INSTANTIATE_TEST_SUITE_P(
    Recipes, FusedProducersModel,
    ::testing::Combine(::testing::Values(Architecture::Llama, Architecture::Olmo), ::testing::Values("fp8", "coat"),
                       ::testing::Values(Recompute::None, Recompute::Qkv, Recompute::Blocks),
                       ::testing::Values(false, true)),
    [](const ::testing::TestParamInfo<Case>& info) {
      return std::string(std::get<0>(info.param) == Architecture::Llama ? "Llama" : "Olmo") + "_" +
             std::get<1>(info.param) + (std::get<2>(info.param) == Recompute::Blocks ? "_recompute" : "") +
             (std::get<2>(info.param) == Recompute::Qkv ? "_qkv" : "") +
             (std::get<3>(info.param) ? "_bf16block" : "");
    });

}  // namespace
}  // namespace coat::models
