// Normalisations over the last dimension. rms_norm: x * rstd * weight (Llama; weight optional).
// layer_norm: (x - mean) * rstd without affine parameters (OLMo). Both save x and the per-row statistics.
#pragma once

#include "coat/autograd/tape.h"
#include "coat/nn/parameter.h"

namespace coat::nn {

autograd::Var rms_norm(autograd::Tape& tape, const autograd::Var& x, Parameter* weight, double eps);
autograd::Var layer_norm(autograd::Tape& tape, const autograd::Var& x, double eps);

}  // namespace coat::nn
