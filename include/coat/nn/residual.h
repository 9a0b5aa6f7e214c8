// Shape plumbing and the residual stream: add (gradient goes to both inputs unchanged) and reshape (a
// view; the gradient is reshaped back). Neither saves anything.
#pragma once

#include "coat/autograd/tape.h"

namespace coat::nn {

autograd::Var add(autograd::Tape& tape, const autograd::Var& a, const autograd::Var& b);
autograd::Var reshape(autograd::Tape& tape, const autograd::Var& x, const Shape& shape);

}  // namespace coat::nn
