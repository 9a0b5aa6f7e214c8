// Normalisations over the last dimension. rms_norm: x * rstd * weight (Llama; weight optional).
// layer_norm: (x - mean) * rstd without affine parameters (OLMo). Both save x and the per-row statistics.
#pragma once

#include "coat/autograd/tape.h"
#include "coat/nn/grad_row_maxima.h"
#include "coat/nn/parameter.h"
#include "coat/ops/quantize.h"

namespace coat::nn {

/// compress: keep x for the backward as FP8 E4M3 with 1x16 group scales (COAT; nn/compressed_save.h) when its
/// last dimension allows. compressed_x: that copy of x made by x's producer (nn::add's compressed_copy), kept
/// instead of compressing x again; ignored when undefined or when x is not kept compressed.
/// out_row_maxima (when not null): set to the output's row maxima, F32 [rows], max |y| per row as stored, from
/// the same kernel: what the FP8 linear that takes y needs for its per-tensor scale (nn::linear_fp8
/// `x_row_maxima`). F32 and BF16 inputs only.
/// What the backward fuses (all on by default; models::Transformer::set_fused_producers turns them off):
/// `residual`: it adds the gradient x's other uses gave it before (the residual stream's: Tape::take_grad) in
/// its own kernel, so the sum needs no add pass (the same bytes); `restore`: a compressed x is restored inside
/// the kernel, not by a pass of its own; `dx_maxima` (when not null): it puts the row maxima of its (summed)
/// gradient there, from the same kernel, for the FP8 linear that gradient reaches next (nn::linear_fp8
/// `dy_maxima`; F32 and BF16 only).
struct NormFusion {
  bool residual = true;
  bool restore = true;
  GradRowMaximaSlot dx_maxima;
};
autograd::Var rms_norm(autograd::Tape& tape, const autograd::Var& x, Parameter* weight, double eps,
                       bool compress = false, const ops::Fp8PerGroup* compressed_x = nullptr,
                       Tensor* out_row_maxima = nullptr, NormFusion fusion = {});
autograd::Var layer_norm(autograd::Tape& tape, const autograd::Var& x, double eps, bool compress = false,
                         const ops::Fp8PerGroup* compressed_x = nullptr, Tensor* out_row_maxima = nullptr,
                         NormFusion fusion = {});

}  // namespace coat::nn
