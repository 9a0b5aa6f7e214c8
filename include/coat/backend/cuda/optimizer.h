// cuda kernels: the FP32 AdamW update of one flat buffer and the sum of squares behind global gradient
// norms. Callers (coat/ops) validate dtypes, shapes and devices; these functions assume them valid.
#pragma once

#include "coat/backend/cpu/optimizer.h"
#include "coat/core/tensor.h"

namespace coat::cuda {

/// param, m, v updated in place by adamw_math::adamw_update (the CPU's operation order, so the bits are
/// identical to cpu::adamw_step): one launch over the whole buffer, 16-byte loads when all four are
/// 16-byte aligned. All four tensors contiguous F32 with one element count.
void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const adamw_math::AdamWScalars& s);
/// sum of x_i^2 over a contiguous float tensor (any float dtype), accumulated in double with a fixed grid
/// and a fixed reduction order (identical bits run to run), into the one-element F64 tensor out on the
/// device; no host synchronisation.
void sum_squares(const Tensor& x, Tensor& out);
/// flag[0] = 1 when some element of the contiguous f32/f64 x is inf or NaN; untouched otherwise. One small
/// launch, no host synchronisation.
void flag_nonfinite(Tensor& flag, const Tensor& x);

}  // namespace coat::cuda
