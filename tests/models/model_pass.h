// Shared by the model tests that compare two ways of running the same model bit for bit (recomputation,
// fused producers): a tiny Llama or OLMo, and one forward + backward + logits pass captured as bytes.
#pragma once

#include <cstdint>
#include <vector>

#include "coat/autograd/tape.h"
#include "coat/models/transformer.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"

namespace coat::test {

/// 3 blocks, hidden 64, intermediate 96; Llama with grouped KV heads and an untied head, OLMo with a tied one.
inline models::ModelConfig tiny_model(models::Architecture arch, double initializer_range) {
  models::ModelConfig c;
  c.architecture = arch;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = arch == models::Architecture::Llama ? 2 : 4;
  c.vocab_size = 50;
  c.max_position_embeddings = 32;
  c.tie_word_embeddings = arch == models::Architecture::Olmo;
  c.initializer_range = initializer_range;
  return c;
}

struct Pass {
  double loss = 0.0;
  size_t saved_bytes = 0;
  std::vector<std::vector<uint8_t>> grads;  // per unit
  std::vector<uint8_t> logits;
};

/// Zeroed gradients, one forward and backward of the mean loss, every unit's gradient and the logits.
inline Pass run_pass(models::Transformer& model, const Tensor& ids, const Tensor& targets) {
  model.zero_grad();
  Pass p;
  {
    autograd::Tape tape;
    nn::LossOutput out = model.forward(tape, ids, targets, -1, 1.0 / static_cast<double>(ids.numel()));
    p.loss = out.read().loss_sum;
    p.saved_bytes = tape.saved_bytes();
    tape.backward(out.root, ops::full(model.context(), {1}, 1.0, DType::F64));
  }
  for (const models::ParamUnit& u : model.units()) p.grads.push_back(ops::to_bytes(u.grad));
  p.logits = ops::to_bytes(model.logits(ids));
  return p;
}

}  // namespace coat::test
