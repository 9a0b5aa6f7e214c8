// cpu kernel: softmax cross-entropy over the last dimension, fused with the logits' gradient.
// Callers (coat/ops) validate shapes, dtypes and devices; the target range is checked here, where the
// targets are read, before anything is computed.
#pragma once

#include <cstdint>

#include "coat/core/tensor.h"

namespace coat::cpu {

/// logits [N, V] contiguous, targets N contiguous i32/i64. Writes an ops::CrossEntropySums into `sums`
/// (I64 [5]): the summed loss of the rows whose target is not ignore_index (in double), their number, and no
/// bad rows (a bad target throws before anything is written). When dlogits is defined (logits' shape and
/// dtype) it receives (softmax - onehot) * grad_scale, zero rows for ignored targets.
void cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, double grad_scale,
                   Tensor& dlogits, Tensor& sums);

}  // namespace coat::cpu
