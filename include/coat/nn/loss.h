// Softmax cross-entropy fused with the logits' gradient: the forward computes the loss and, in the same
// pass, dlogits = (softmax - onehot) * grad_scale, which the backward hands on (scaled by the seed).
// Rows whose target is ignore_index count for nothing. The sums stay on the device until read().
#pragma once

#include "coat/autograd/tape.h"
#include "coat/ops/loss.h"

namespace coat::nn {

struct LossOutput {
  Tensor loss_sum;      ///< F64 [1] on the logits' device: summed over counted tokens
  Tensor count;         ///< F64 [1] on the logits' device: tokens counted (exact below 2^53)
  autograd::Var root;   ///< F64 [1] (loss_sum * grad_scale, computed on the device) to call backward on
  ops::CrossEntropyResult result;  ///< the op's sums (its dlogits moved to the tape): totals(), read()

  /// loss_sum and count read back (one copy); throws the bad-target InvalidArgument (ops::cross_entropy).
  ops::CrossEntropyValues read() const { return result.read(); }
};

/// logits [..., V], targets of the leading shape. grad_scale multiplies the gradient (1 / tokens of the
/// global batch for a mean over the batch across micro-batches). Nothing is read back.
/// Seed the backward of `root` with loss_seed(): the backward reads the seed as a number, and a host
/// tensor is read without waiting for the device.
LossOutput cross_entropy(autograd::Tape& tape, const autograd::Var& logits, const Tensor& targets, int64_t ignore_index,
                         double grad_scale, bool compute_grad = true);

/// The seed of a scalar loss's backward: F64 [1] = 1.0 in host memory (its own CPU context).
Tensor loss_seed();

}  // namespace coat::nn
