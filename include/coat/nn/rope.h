// Rotary position embedding, HF's rotate-half convention, on [B, T, H, Dh]. Saves nothing: its backward
// is the inverse rotation.
#pragma once

#include "coat/autograd/tape.h"

namespace coat::nn {

autograd::Var rope(autograd::Tape& tape, const autograd::Var& x, double theta, int64_t position_offset = 0);

}  // namespace coat::nn
