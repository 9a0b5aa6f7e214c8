// Device-agnostic reductions. Results stay on the input's device (read them back when needed).
#pragma once

#include "coat/core/tensor.h"

namespace coat::ops {

/// Sum of all elements, accumulated in double: a one-element F32 tensor (F64 for F64 input).
Tensor sum(const Tensor& x);
/// Sum over the last dimension: shape [..., C] -> [...], F32 (F64 for F64 input).
Tensor sum_last_dim(const Tensor& x);
/// max |x| over the tensor as a one-element F32 tensor; NaN and inf propagate (never hidden).
Tensor amax(const Tensor& x);
/// max |x| per group of group_size along the last dimension: [..., K] -> [..., K / group_size], F32.
Tensor group_amax(const Tensor& x, int64_t group_size);

}  // namespace coat::ops
