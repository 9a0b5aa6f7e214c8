// Activation recomputation per block: bit-identical loss and gradients to keeping every activation (the
// model has no dropout, and the CPU kernels are deterministic), in F32 and in BF16 compute, for Llama
// (grouped KV heads, untied head) and OLMo (LayerNorm, tied head); and the tape keeps exactly the block
// internals less.
#include <gtest/gtest.h>


#include "coat/autograd/tape.h"
#include "coat/models/transformer.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/runtime.h"
#include "models/model_pass.h"
#include "random_values.h"

namespace coat::models {
namespace {

using test::Pass;

ModelConfig tiny(Architecture arch) { return test::tiny_model(arch, 0.2); }

Pass run(Transformer& model, Recompute recompute, const Tensor& ids, const Tensor& targets) {
  model.set_recompute(recompute);
  return test::run_pass(model, ids, targets);
}

class Recomputation : public ::testing::TestWithParam<std::tuple<Architecture, DType>> {};

TEST_P(Recomputation, GradientsAreBitIdenticalAndSavedBytesDrop) {
  const auto [arch, compute] = GetParam();
  const ModelConfig config = tiny(arch);
  auto ctx = ops::make_context(Device::cpu());
  Transformer model(config, ctx, DType::F32, true, compute);
  model.init(11);
  const int64_t batch = 2, seq = 16;
  const test::TokenBatch batch_tokens = test::random_tokens(ctx, batch, seq, 50, 5);
  const Tensor& ids = batch_tokens.ids;
  const Tensor& targets = batch_tokens.targets;

  const Pass keep = run(model, Recompute::None, ids, targets);
  const Pass again = run(model, Recompute::Blocks, ids, targets);
  EXPECT_EQ(again.loss, keep.loss);
  ASSERT_EQ(again.grads.size(), keep.grads.size());
  for (size_t u = 0; u < keep.grads.size(); ++u)
    EXPECT_EQ(again.grads[u], keep.grads[u]) << model.units()[u].name;
  EXPECT_EQ(again.logits, keep.logits);

  // Without recomputation each block also keeps (beyond its input) its two norm outputs, q and k after RoPE,
  // v, the attention output, the residual after attention (5 h + 2 kv values per token), gate, up and their
  // product (3 ffn), the norms' statistics (rstd, or mean and rstd) and the attention's log-sum-exp (F32).
  const auto tokens = static_cast<size_t>(batch * seq);
  const auto h = static_cast<size_t>(config.hidden_size), ffn = static_cast<size_t>(config.intermediate_size);
  const auto kv = static_cast<size_t>(config.num_key_value_heads * config.head_dim());
  const size_t stats_per_norm = arch == Architecture::Llama ? 1 : 2;
  const size_t per_block = tokens * (5 * h + 2 * kv + 3 * ffn) * dtype_size(compute) +
                           tokens * 2 * stats_per_norm * 4 +
                           tokens * static_cast<size_t>(config.num_attention_heads) * 4;
  EXPECT_EQ(keep.saved_bytes - again.saved_bytes, static_cast<size_t>(config.num_hidden_layers) * per_block);
  // What is left: each block's input, the final norm's input, statistics and output, the logits' gradient and
  // the token ids.
  const size_t v = dtype_size(compute);
  EXPECT_EQ(again.saved_bytes, static_cast<size_t>(config.num_hidden_layers) * tokens * h * v +
                                   2 * tokens * h * v + tokens * stats_per_norm * 4 +
                                   tokens * static_cast<size_t>(config.vocab_size) * v + tokens * 4);
}

INSTANTIATE_TEST_SUITE_P(LlamaAndOlmo, Recomputation,
                         ::testing::Combine(::testing::Values(Architecture::Llama, Architecture::Olmo),
                                            ::testing::Values(DType::F32, DType::BF16)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) == Architecture::Llama ? "Llama"
                                                                                             : "Olmo") +
                                  (std::get<1>(info.param) == DType::F32 ? "F32" : "BF16");
                         });

}  // namespace
}  // namespace coat::models
