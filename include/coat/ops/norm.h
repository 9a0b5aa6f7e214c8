// Device-agnostic normalisations over the last dimension: RMSNorm (Llama; optional weight) and LayerNorm
// without affine parameters (OLMo), each with its hand-written backward.
#pragma once

#include "coat/core/tensor.h"

namespace coat::ops {

/// What a normalisation's forward returns: the output (x's shape and dtype) and the per-row statistics
/// its backward needs, [N] in F32 (F64 for F64 input). mean is undefined for RMSNorm. row_max, when asked
/// for: F32 [N], max |y| of each row as y is stored (after rounding to its dtype), NaN for a row holding a
/// NaN, inf for one holding an inf; what ops::quantize_per_tensor_from_row_maxima takes (COAT's group
/// scaling: the producer writes the maxima, the FP8 linear that follows needs no amax pass of its own).
struct NormForward {
  Tensor y;
  Tensor mean;
  Tensor rstd;
  Tensor row_max;
};

/// y = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps) per row. x is [N, D] (or [..., D], N = the
/// product of the leading dimensions) in f32, f64 or bf16; weight is [D] in x's dtype, or undefined for
/// no affine weight. with_row_max: also row_max (f32 and bf16 x only), from the same pass.
NormForward rmsnorm_forward(const Tensor& x, const Tensor& weight, double eps, bool with_row_max = false);
/// Returns dx (x's shape and dtype). When weight is defined, dweight_accum ([D], f32 or f64) gets
/// += sum over rows of dy * x * rstd; pass an undefined tensor when weight is undefined.
/// residual (when defined; x's shape and dtype): the gradient x's other uses gave (the residual stream),
/// added in the same kernel: dx is then the bytes of ops::add(residual, dx without it), with no pass of its
/// own. row_max (when not null; f32 and bf16): set to F32 [N], max |dx| of each returned row as stored, NaN
/// and inf propagated, from the same kernel (what ops::quantize_per_tensor_from_row_maxima takes).
Tensor rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd,
                        Tensor dweight_accum, const Tensor& residual = Tensor(), Tensor* row_max = nullptr);

/// y = (x - mean) * rstd, rstd = 1 / sqrt(var + eps) with the biased variance of each row. x is [N, D]
/// (or [..., D]) in f32, f64 or bf16. with_row_max: also row_max (f32 and bf16 x only), from the same pass.
NormForward layernorm_forward(const Tensor& x, double eps, bool with_row_max = false);
/// Returns dx (x's shape and dtype) from the forward's saved mean and rstd; residual and row_max as for
/// rmsnorm_backward.
Tensor layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                          const Tensor& residual = Tensor(), Tensor* row_max = nullptr);

/// The backwards with x given as COAT's compressed copy of it (nn::save_input): E4M3 codes of dy's shape and F32
/// scale_inv [..., D / 16] (ops::quantize_per_group(x, 16, E4M3)), restored to dy's dtype (f32 or bf16) inside
/// the CUDA kernel exactly as dequantize_per_group restores them: the bytes of the backward of the restored x,
/// without a restored x in memory (the CPU reference restores it first). D a multiple of 16.
Tensor rmsnorm_backward_compressed(const Tensor& dy, const Tensor& codes, const Tensor& scale_inv,
                                   const Tensor& weight, const Tensor& rstd, Tensor dweight_accum,
                                   const Tensor& residual = Tensor(), Tensor* row_max = nullptr);
Tensor layernorm_backward_compressed(const Tensor& dy, const Tensor& codes, const Tensor& scale_inv,
                                     const Tensor& mean, const Tensor& rstd, const Tensor& residual = Tensor(),
                                     Tensor* row_max = nullptr);

}  // namespace coat::ops
