// Normalisations over the last dimension. rms_norm: x * rstd * weight (Llama; weight optional).
// layer_norm: (x - mean) * rstd without affine parameters (OLMo). Both save x and the per-row statistics.
#pragma once

#include "coat/autograd/tape.h"
#include "coat/nn/parameter.h"

namespace coat::nn {

/// compress: keep x for the backward as FP8 E4M3 with 1x16 group scales (COAT; nn/compressed_save.h) when its
/// last dimension allows.
autograd::Var rms_norm(autograd::Tape& tape, const autograd::Var& x, Parameter* weight, double eps,
                       bool compress = false);
autograd::Var layer_norm(autograd::Tape& tape, const autograd::Var& x, double eps, bool compress = false);

}  // namespace coat::nn
