// cuda kernels: SwiGLU gating (silu(gate) * up) and its backward over contiguous tensors of one shape,
// 16-byte vector accesses where alignment allows. Arithmetic in float (double for f64), as on the CPU;
// the device's expf differs from the host's by at most a couple of float ulps.
// Callers (coat/ops) validate shapes, dtypes and devices.
#pragma once

#include "coat/core/tensor.h"

namespace coat::cuda {

/// y = silu(gate) * up.
void swiglu(const Tensor& gate, const Tensor& up, Tensor& y);
/// dgate = dy * up * silu'(gate), dup = dy * silu(gate).
void swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up, Tensor& dgate, Tensor& dup);

}  // namespace coat::cuda
