// Device-agnostic softmax cross-entropy fused with the logits' gradient.
#pragma once

#include <cstdint>

#include "coat/core/tensor.h"

namespace coat::ops {

struct CrossEntropyResult {
  double loss_sum = 0.0;  ///< sum over counted rows of (logsumexp(logits) - logits[target]), in double
  int64_t count = 0;      ///< rows whose target is not ignore_index
  Tensor dlogits;  ///< (softmax - onehot(target)) * grad_scale, logits' shape and dtype; 0 on ignored rows
};

/// logits [N, V] (or [..., V]; f32, f64 or bf16), targets [N] (the leading shape; i32 or i64). Rows whose
/// target == ignore_index are skipped (their dlogits row is 0); any other target outside [0, V) is an
/// InvalidArgument naming it. dlogits is left undefined when compute_grad is false.
CrossEntropyResult cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                 double grad_scale, bool compute_grad = true);

}  // namespace coat::ops
