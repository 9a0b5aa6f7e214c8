// Device-agnostic SwiGLU gating: silu(gate) * up, silu(x) = x / (1 + exp(-x)), with its backward.
#pragma once

#include "coat/core/tensor.h"

namespace coat::ops {

/// silu(gate) * up; gate and up of one shape and one dtype (f32, f64 or bf16).
Tensor swiglu(const Tensor& gate, const Tensor& up);

struct SwigluGrads {
  Tensor dgate;
  Tensor dup;
};

/// dgate = dy * up * sigmoid(gate) * (1 + gate * (1 - sigmoid(gate))), dup = dy * silu(gate); in the
/// inputs' dtype.
SwigluGrads swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up);

}  // namespace coat::ops
