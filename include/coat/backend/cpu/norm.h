// cpu kernels: RMSNorm and LayerNorm (no affine) over the last dimension of contiguous tensors seen as
// [N, D]. Arithmetic in float (double for f64 data); row sums accumulate in double.
// Callers (coat/ops) validate shapes, dtypes and devices; these functions assume them valid.
#pragma once

#include "coat/core/tensor.h"

namespace coat::cpu {

/// y = x * rstd (* weight when defined); rstd [N] (f32, f64 for f64 x) = 1 / sqrt(mean(x^2) + eps).
/// row_max (when not null; f32 and bf16 x): f32 [N], max |y| of each row as stored, NaN and inf propagated.
void rmsnorm_forward(const Tensor& x, const Tensor& weight, double eps, Tensor& y, Tensor& rstd,
                     Tensor* row_max = nullptr);
/// dx from dy; when weight is defined, dweight_accum (f32 or f64, [D]) += sum_n dy * x * rstd.
/// residual (when defined; dx's shape, contiguous): added to each dx value once it is rounded, and rounded again
/// (the bytes of ops::add(residual, dx)); row_max (when not null; f32 and bf16): F32 [N], max |dx| of each row
/// as stored.
void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd, Tensor& dx,
                      Tensor& dweight_accum, const Tensor& residual = Tensor(), Tensor* row_max = nullptr);
/// y = (x - mean) * rstd; mean and rstd [N] (f32, f64 for f64 x); row_max as for rmsnorm_forward.
void layernorm_forward(const Tensor& x, double eps, Tensor& y, Tensor& mean, Tensor& rstd,
                       Tensor* row_max = nullptr);
/// dx = rstd * (dy - mean(dy) - xhat * mean(dy * xhat)), xhat = (x - mean) * rstd.
/// residual and row_max as for rmsnorm_backward.
void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                        Tensor& dx, const Tensor& residual = Tensor(), Tensor* row_max = nullptr);

}  // namespace coat::cpu
