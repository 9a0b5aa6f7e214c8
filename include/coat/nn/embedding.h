// embedding: rows of the [vocab, hidden] table picked by token ids; the backward accumulates the rows'
// gradients in token order (deterministic). Ids outside the vocabulary are an error naming the id.
#pragma once

#include "coat/autograd/tape.h"
#include "coat/nn/parameter.h"

namespace coat::nn {

/// ids: integer tensor of any shape S; the result has shape S + [hidden].
autograd::Var embedding(autograd::Tape& tape, Parameter& table, const Tensor& ids);

}  // namespace coat::nn
