// cuda kernel: softmax cross-entropy over the last dimension, fused with the logits' gradient.
// Callers (coat/ops) validate shapes, dtypes and devices; the target range is checked on the device and
// reported through the sums.
#pragma once

#include <cstdint>

#include "coat/core/tensor.h"

namespace coat::cuda {

/// logits [N, V] contiguous (f32, f64 or bf16), targets N contiguous i32/i64. One block per row: pass 1
/// reads the row once for the max and the sum of exponentials (online softmax: per-thread running max,
/// sum in double), pass 2 writes (softmax - onehot) * grad_scale into dlogits (when defined) in logits'
/// dtype, reading the row again from shared memory (rows of 8-96 KB, e.g. V = 32000 bf16) or from memory
/// (longer rows); no full-vocabulary float tensor is kept. Per-row losses go to a buffer that one block
/// sums in a fixed order in double into `sums` (I64 [5] holding an ops::CrossEntropySums): the summed loss
/// of the rows whose target is not ignore_index, their number, the rows with a target outside [0, V) other
/// than ignore_index and the first of them with its target. No host synchronisation: the caller reads
/// `sums` when it wants them (ops::CrossEntropyResult::read). The bits do not depend on compute_grad.
void cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, double grad_scale,
                   Tensor& dlogits, Tensor& sums);

}  // namespace coat::cuda
