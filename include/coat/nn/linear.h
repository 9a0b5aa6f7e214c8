// linear: y = x @ W^T (no bias, as Llama and OLMo). x is [..., in], W is [out, in].
// Saves x; backward gives dx = dy @ W and accumulates dW += dy^T @ x into the parameter's gradient.
#pragma once

#include "coat/autograd/tape.h"
#include "coat/nn/fp8_weights.h"
#include "coat/nn/grad_row_maxima.h"
#include "coat/nn/output_remake.h"
#include "coat/nn/parameter.h"

namespace coat::nn {

/// remake (when not null, and the tape records): set to what makes y again from the saved x (nn/output_remake.h).
autograd::Var linear(autograd::Tape& tape, const autograd::Var& x, Parameter& weight, OutputRemake* remake = nullptr);

/// The same through FP8 GEMMs (COAT / TransformerEngine; models/precision_recipe.h):
///   fprop  y  = x W^T      E4M3 x E4M3, fast accumulation, BF16 out
///   dgrad  dx = dy W       E5M2 x E4M3 (W^T's codes from `weights`), BF16 out
///   wgrad  dW += dy^T x    E5M2 x E4M3, accumulated in FP32 into the parameter's gradient
/// x and dy are quantised per tensor just in time (amax on the device), each with its transpose in the same
/// pass where a GEMM needs it; W comes from `weights` (quantised once per optimizer step).
/// save_fp8_input: keep the FP8 transposed x the forward made (1 byte per element) instead of x (COAT);
/// otherwise x is kept and quantised again in the backward (TransformerEngine's BF16 saved activations, or an
/// input that another function keeps anyway). in_features, out_features and the row count of x must be
/// multiples of 16 (cuBLASLt FP8); x is BF16.
/// x_row_maxima (when defined): max |x| of each row of x, F32 [rows], as x's producer wrote them (nn::rms_norm,
/// layer_norm, swiglu_packed `out_row_maxima`): x's scale comes from them (the same bytes, through
/// ops::quantize_per_tensor_from_row_maxima) and the forward makes no amax pass over x. Moved in, they are
/// freed as soon as the scale is made.
/// dy_maxima (when not null): the slot where the producer of this linear's output gradient leaves that
/// gradient's row maxima (nn::swiglu_packed `dgu_maxima`); the backward takes dy's E5M2 scale from them (the
/// same bytes) instead of an amax pass, and makes its own where the slot holds none for dy.
/// remake (when not null, and the tape records): set to what makes y again from what the node keeps
/// (nn/output_remake.h): x's transposed codes transposed back (save_fp8_input), or x quantised again with the
/// same scale, through the forward's GEMM and weight codes.
autograd::Var linear_fp8(autograd::Tape& tape, const autograd::Var& x, Parameter& weight, Fp8Weights& weights,
                         bool save_fp8_input, Tensor x_row_maxima = Tensor(), GradRowMaximaSlot dy_maxima = nullptr,
                         OutputRemake* remake = nullptr);

}  // namespace coat::nn
