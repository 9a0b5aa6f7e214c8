// SwiGLU's gating: silu(gate) * up. Saves gate and up.
#pragma once

#include "coat/autograd/tape.h"

namespace coat::nn {

autograd::Var swiglu(autograd::Tape& tape, const autograd::Var& gate, const autograd::Var& up);

}  // namespace coat::nn
