// Device-agnostic SwiGLU gating: silu(gate) * up, silu(x) = x / (1 + exp(-x)), with its backward.
#pragma once

#include "coat/core/tensor.h"
#include "coat/ops/quantize.h"

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

/// SwiGLU of a packed gate/up projection gu [..., 2F] (f32, f64 or bf16): gate = gu[..., :F],
/// up = gu[..., F:]; y [..., F] = silu(gate) * up, the numbers swiglu(gate, up) gives.
/// row_max (when not null; f32 and bf16 gu): set to F32 [rows of y], max |y| of each row as stored, NaN and
/// inf propagated (what ops::quantize_per_tensor_from_row_maxima takes), written by the same kernel.
/// gu_compressed (when not null; F a multiple of 16): set to gu's 1x16 E4M3 copy, the bytes of
/// quantize_per_group(gu, 16, E4M3) (COAT's saved input of the SwiGLU); on CUDA written by the same kernel as y,
/// from the values it reads anyway, instead of a second read of gu.
Tensor swiglu_packed(const Tensor& gu, Tensor* row_max = nullptr, Fp8PerGroup* gu_compressed = nullptr);

/// dgu [..., 2F] from dy [..., F]: dgate in dgu[..., :F], dup in dgu[..., F:] (the numbers of
/// swiglu_backward), in gu's dtype.
/// row_max (when not null; f32 and bf16): set to F32 [rows of dgu], max |dgu| of each whole row (both halves)
/// as stored, NaN and inf propagated, written by the same kernel: the gate/up linear's backward takes its
/// output gradient's FP8 scale from them (ops::quantize_per_tensor_from_row_maxima) instead of an amax pass.
Tensor swiglu_packed_backward(const Tensor& dy, const Tensor& gu, Tensor* row_max = nullptr);
/// swiglu_packed_backward(dy, dequantize_per_group(codes, scale_inv, 16, dy's dtype), row_max) with gu given as
/// its compressed copy (COAT's saved activation: E4M3 codes [..., 2F], F32 scale_inv [..., 2F / 16]): the
/// same bytes; on CUDA the kernel restores gu itself instead of a separate dequantisation pass.
Tensor swiglu_packed_backward_compressed(const Tensor& dy, const Tensor& codes, const Tensor& scale_inv,
                                         Tensor* row_max = nullptr);

}  // namespace coat::ops
