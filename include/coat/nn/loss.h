// Softmax cross-entropy fused with the logits' gradient: the forward computes the loss and, in the same
// pass, dlogits = (softmax - onehot) * grad_scale, which the backward hands on (scaled by the seed).
// Rows whose target is ignore_index count for nothing.
#pragma once

#include "coat/autograd/tape.h"

namespace coat::nn {

struct LossOutput {
  double loss_sum = 0.0;  ///< summed over counted tokens
  int64_t count = 0;      ///< tokens counted
  autograd::Var root;     ///< one-element tensor (loss_sum * grad_scale) to call backward on
};

/// logits [..., V], targets of the leading shape. grad_scale multiplies the gradient (1 / tokens of the
/// global batch for a mean over the batch across micro-batches).
LossOutput cross_entropy(autograd::Tape& tape, const autograd::Var& logits, const Tensor& targets, int64_t ignore_index,
                         double grad_scale, bool compute_grad = true);

}  // namespace coat::nn
