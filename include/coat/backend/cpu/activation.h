// cpu kernels: SwiGLU gating (silu(gate) * up) and its backward over contiguous tensors of one shape.
// Arithmetic in float (double for f64). Callers (coat/ops) validate shapes, dtypes and devices.
#pragma once

#include "coat/core/tensor.h"

namespace coat::cpu {

/// y = silu(gate) * up.
void swiglu(const Tensor& gate, const Tensor& up, Tensor& y);
/// dgate = dy * up * silu'(gate), dup = dy * silu(gate).
void swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up, Tensor& dgate, Tensor& dup);

}  // namespace coat::cpu
