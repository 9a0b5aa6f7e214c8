// Rotary position embedding, HF's rotate-half convention, on [B, T, H, Dh]. Saves nothing: its backward
// is the inverse rotation.
#pragma once

#include <vector>

#include "coat/autograd/tape.h"

namespace coat::nn {

/// RoPE with the model's inverse frequencies (Dh/2 values; ops::rope says how they turn x).
autograd::Var rope(autograd::Tape& tape, const autograd::Var& x, std::vector<double> inv_freq,
                   int64_t position_offset = 0);
/// The default RoPE of base theta.
autograd::Var rope(autograd::Tape& tape, const autograd::Var& x, double theta, int64_t position_offset = 0);

}  // namespace coat::nn
