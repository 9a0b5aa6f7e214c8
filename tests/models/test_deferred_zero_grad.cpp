// Transformer::zero_grad(defer_linear = true): the linear-only weights' gradients are not filled but
// overwritten by their first backward GEMM. Over two accumulated micro-batches the gradients equal those of a
// full fill (values compared as doubles: only the sign of an exact zero may differ, 0 + -0 = +0), in F32
// and BF16 compute, for an untied (Llama) and a tied (OLMo) head; finish_grads zeroes a gradient that no
// backward wrote.
#include <gtest/gtest.h>

#include <random>

#include "coat/autograd/tape.h"
#include "coat/models/transformer.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/runtime.h"

namespace coat::models {
namespace {

ModelConfig tiny(Architecture arch) {
  ModelConfig c;
  c.architecture = arch;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.vocab_size = 40;
  c.max_position_embeddings = 16;
  c.tie_word_embeddings = arch == Architecture::Olmo;
  return c;
}

std::vector<std::vector<double>> accumulate_two(Transformer& model, bool defer) {
  auto ctx = model.context();
  model.zero_grad(defer);
  std::mt19937 rng(3);
  for (int micro = 0; micro < 2; ++micro) {
    std::vector<double> ids(2 * 8), targets(2 * 8);
    for (size_t i = 0; i < ids.size(); ++i) {
      ids[i] = static_cast<double>(rng() % 40);
      targets[i] = static_cast<double>(rng() % 40);
    }
    autograd::Tape tape;
    nn::LossOutput out = model.forward(tape, ops::from_vector(ctx, {2, 8}, DType::I32, ids),
                                       ops::from_vector(ctx, {2, 8}, DType::I32, targets), -1, 1.0 / 32);
    tape.backward(out.root, ops::full(ctx, {1}, 1.0, DType::F64));
  }
  model.finish_grads();
  std::vector<std::vector<double>> grads;
  for (const ParamUnit& u : model.units()) grads.push_back(ops::to_double_vector(u.grad));
  return grads;
}

class DeferredZeroGrad : public ::testing::TestWithParam<std::tuple<Architecture, DType>> {};

TEST_P(DeferredZeroGrad, EqualsAFullFill) {
  const auto [arch, compute] = GetParam();
  auto ctx = ops::make_context(Device::cpu());
  Transformer model(tiny(arch), ctx, DType::F32, true, compute);
  model.init(5);
  const auto full = accumulate_two(model, false);
  // Leave stale values in every gradient buffer first: the deferred path must not add to them.
  for (ParamUnit& u : model.units()) ops::fill_(u.grad, 123.0);
  const auto deferred = accumulate_two(model, true);
  ASSERT_EQ(full.size(), deferred.size());
  for (size_t u = 0; u < full.size(); ++u) EXPECT_EQ(deferred[u], full[u]) << model.units()[u].name;
}

TEST(DeferredZeroGradFinish, ZeroesWhatNoBackwardWrote) {
  auto ctx = ops::make_context(Device::cpu());
  Transformer model(tiny(Architecture::Llama), ctx, DType::F32, true);
  model.init(5);
  for (ParamUnit& u : model.units()) ops::fill_(u.grad, 7.0);
  model.zero_grad(/*defer_linear=*/true);  // no forward, no backward
  model.finish_grads();
  for (const ParamUnit& u : model.units())
    for (double g : ops::to_double_vector(u.grad)) ASSERT_EQ(g, 0.0) << u.name;
}

INSTANTIATE_TEST_SUITE_P(Architectures, DeferredZeroGrad,
                         ::testing::Combine(::testing::Values(Architecture::Llama, Architecture::Olmo),
                                            ::testing::Values(DType::F32, DType::BF16)));

}  // namespace
}  // namespace coat::models
