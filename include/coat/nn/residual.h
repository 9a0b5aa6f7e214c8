// Shape plumbing and the residual stream: add (gradient goes to both inputs unchanged) and reshape (a
// view; the gradient is reshaped back). Neither saves anything.
#pragma once

#include "coat/autograd/tape.h"
#include "coat/ops/quantize.h"

namespace coat::nn {

/// a + b. compressed_copy (COAT): when not null, the sum's compressed copy for the norm that takes the sum as
/// its input (nn::rms_norm / layer_norm `compressed_x`) is made by the same kernel while the sum is at hand,
/// when that norm will keep its input compressed (compresses_input: the tape records gradients and the last
/// dimension is a multiple of kCompressGroup); otherwise it is left undefined and the norm compresses
/// its input itself. The copy has the bytes save_input would make.
autograd::Var add(autograd::Tape& tape, const autograd::Var& a, const autograd::Var& b,
                  ops::Fp8PerGroup* compressed_copy = nullptr);
autograd::Var reshape(autograd::Tape& tape, const autograd::Var& x, const Shape& shape);

}  // namespace coat::nn
