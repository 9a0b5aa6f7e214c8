// cuda kernels: RMSNorm and LayerNorm (no affine) over the last dimension of contiguous tensors seen as
// [N, D], forward and backward; one block per row (persistent grid), 16-byte vector accesses where the
// row length and alignment allow. Arithmetic in float (double for f64); row sums are block reductions in
// float in a fixed order (the CPU twin sums rows in double: results agree to float rounding of the sums).
// Deterministic: two runs on one device give identical bits, dweight_accum included (per-block partial
// sums in a workspace, then a second kernel adding them in a fixed order; no float atomics).
// Callers (coat/ops) validate shapes, dtypes and devices; these functions assume them valid.
#pragma once

#include "coat/core/tensor.h"

namespace coat::cuda {

/// x as the backward kernels read it: `values` (x's dtype), or, with values undefined, COAT's compressed copy
/// of x: E4M3 `codes` of x's shape and F32 `scale_inv` [N, D / 16] (ops::quantize_per_group(x, 16, E4M3)),
/// restored in registers exactly as dequantize_per_group restores them to dy's dtype (no restore pass).
struct NormInput {
  Tensor values;
  Tensor codes;
  Tensor scale_inv;
};

/// y = x * rstd (* weight when defined); rstd [N] (f32, f64 for f64 x) = 1 / sqrt(mean(x^2) + eps).
/// row_max (when not null; f32 and bf16 x): f32 [N], max |y| of each row as stored, NaN and inf propagated.
void rmsnorm_forward(const Tensor& x, const Tensor& weight, double eps, Tensor& y, Tensor& rstd,
                     Tensor* row_max = nullptr);
/// dx from dy; when weight is defined, dweight_accum (f32 or f64, [D]) += sum_n dy * x * rstd.
/// residual (when defined; dx's shape, contiguous): added to each dx value once it is rounded, and rounded again
/// (the bytes of ops::add(residual, dx)); row_max (when not null; f32 and bf16): F32 [N], max |dx| of each row
/// as stored.
void rmsnorm_backward(const Tensor& dy, const NormInput& x, const Tensor& weight, const Tensor& rstd, Tensor& dx,
                      Tensor& dweight_accum, const Tensor& residual = Tensor(), Tensor* row_max = nullptr);
inline void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd, Tensor& dx,
                             Tensor& dweight_accum, const Tensor& residual = Tensor(), Tensor* row_max = nullptr) {
  rmsnorm_backward(dy, NormInput{x, Tensor(), Tensor()}, weight, rstd, dx, dweight_accum, residual, row_max);
}
/// y = (x - mean) * rstd; mean and rstd [N] (f32, f64 for f64 x); row_max as for rmsnorm_forward.
void layernorm_forward(const Tensor& x, double eps, Tensor& y, Tensor& mean, Tensor& rstd,
                       Tensor* row_max = nullptr);
/// dx = rstd * (dy - mean(dy) - xhat * mean(dy * xhat)), xhat = (x - mean) * rstd.
/// residual and row_max as for rmsnorm_backward.
void layernorm_backward(const Tensor& dy, const NormInput& x, const Tensor& mean, const Tensor& rstd,
                        Tensor& dx, const Tensor& residual = Tensor(), Tensor* row_max = nullptr);
inline void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                               Tensor& dx, const Tensor& residual = Tensor(), Tensor* row_max = nullptr) {
  layernorm_backward(dy, NormInput{x, Tensor(), Tensor()}, mean, rstd, dx, residual, row_max);
}

}  // namespace coat::cuda
