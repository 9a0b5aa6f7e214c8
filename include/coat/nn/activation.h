// SwiGLU's gating: silu(gate) * up. Saves gate and up (swiglu) or the packed gate/up projection
// (swiglu_packed).
#pragma once

#include "coat/autograd/tape.h"

namespace coat::nn {

autograd::Var swiglu(autograd::Tape& tape, const autograd::Var& gate, const autograd::Var& up);

/// silu(gate) * up of a packed projection gu [..., 2F] (gate = gu[..., :F], up = gu[..., F:], as one GEMM
/// against [gate_proj; up_proj] gives): y [..., F]. Its backward gives dgu [..., 2F] in one buffer, so that
/// one linear backward follows.
/// compress: keep gu as FP8 E4M3 with 1x16 group scales (COAT; nn/compressed_save.h).
autograd::Var swiglu_packed(autograd::Tape& tape, const autograd::Var& gu, bool compress = false);

}  // namespace coat::nn
