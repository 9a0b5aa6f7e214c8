// SwiGLU's gating: silu(gate) * up. Saves gate and up (swiglu) or the packed gate/up projection
// (swiglu_packed).
#pragma once

#include "coat/autograd/tape.h"
#include "coat/nn/grad_row_maxima.h"

namespace coat::nn {

autograd::Var swiglu(autograd::Tape& tape, const autograd::Var& gate, const autograd::Var& up);

/// silu(gate) * up of a packed projection gu [..., 2F] (gate = gu[..., :F], up = gu[..., F:], as one GEMM
/// against [gate_proj; up_proj] gives): y [..., F]. Its backward gives dgu [..., 2F] in one buffer, so that
/// one linear backward follows.
/// compress: keep gu as FP8 E4M3 with 1x16 group scales (COAT; nn/compressed_save.h).
/// out_row_maxima (when not null): set to y's row maxima, F32 [rows], max |y| per row as stored, from the same
/// kernel, for the FP8 linear that takes y (nn::linear_fp8 `x_row_maxima`). F32 and BF16 gu only.
/// dgu_maxima (when not null): the backward writes dgu's row maxima from the same kernel into this slot, for
/// the FP8 linear that made gu (nn::linear_fp8 `dy_maxima`). F32 and BF16 gu only.
autograd::Var swiglu_packed(autograd::Tape& tape, const autograd::Var& gu, bool compress = false,
                            Tensor* out_row_maxima = nullptr, GradRowMaximaSlot dgu_maxima = nullptr);

}  // namespace coat::nn
