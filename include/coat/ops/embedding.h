// Device-agnostic embedding lookup and its (deterministic) backward.
#pragma once

#include "coat/core/tensor.h"

namespace coat::ops {

/// Rows of weight [V, D] (f32, f64 or bf16) picked by ids (i32 or i64, shape [N] or any shape S): the
/// result is [N, D] (S + [D]) in weight's dtype. An id < 0 or >= V is an InvalidArgument naming the id,
/// its position and V.
Tensor embedding(const Tensor& weight, const Tensor& ids);
/// dweight_accum [V, D] (f32 or f64, contiguous) += the rows of dy (ids' shape + [D]) at their ids, in
/// position order (deterministic), accumulated in dweight_accum's precision.
void embedding_backward(const Tensor& dy, const Tensor& ids, Tensor dweight_accum);

}  // namespace coat::ops
