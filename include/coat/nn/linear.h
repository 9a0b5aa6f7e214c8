// linear: y = x @ W^T (no bias, as Llama and OLMo). x is [..., in], W is [out, in].
// Saves x; backward gives dx = dy @ W and accumulates dW += dy^T @ x into the parameter's gradient.
#pragma once

#include "coat/autograd/tape.h"
#include "coat/nn/parameter.h"

namespace coat::nn {

autograd::Var linear(autograd::Tape& tape, const autograd::Var& x, Parameter& weight);

}  // namespace coat::nn
