// cpu kernels: embedding lookup and its backward. Callers (coat/ops) validate shapes, dtypes and devices;
// the id range is checked here, where the ids are read, before anything is written.
#pragma once

#include "coat/core/tensor.h"

namespace coat::cpu {

/// out[n] = weight[ids[n]] for weight [V, D] and contiguous ids (i32/i64) of N elements, out [N * D].
void embedding(const Tensor& weight, const Tensor& ids, Tensor& out);
/// dweight_accum[ids[n]] += dy[n] for n = 0, 1, ... in order; dweight_accum f32 or f64.
void embedding_backward(const Tensor& dy, const Tensor& ids, Tensor& dweight_accum);

}  // namespace coat::cpu
