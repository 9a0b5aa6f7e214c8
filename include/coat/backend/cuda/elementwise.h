// cuda kernels: element-wise arithmetic and reductions over contiguous tensors.
// Callers (coat/ops) validate shapes, dtypes and devices; these functions assume them valid.
#pragma once

#include "coat/backend/binary_op.h"
#include "coat/core/tensor.h"

namespace coat::cuda {

/// out = a (op) b, all contiguous with one shape and one float dtype.
void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out);
/// out = a * factor.
void scale(const Tensor& a, double factor, Tensor& out);
/// out = 1 / a.
void reciprocal(const Tensor& a, Tensor& out);
/// Sum of all elements (accumulated in double) into a one-element F32/F64 tensor.
void sum(const Tensor& x, Tensor& out);
/// Sum over the last dimension: x [R, C] -> out [R] (F32/F64), accumulated in double.
void sum_last_dim(const Tensor& x, Tensor& out);

}  // namespace coat::cuda
