// cuda kernels: SwiGLU gating (silu(gate) * up) and its backward over contiguous tensors of one shape, and
// the same on a packed gate/up projection [N, 2F]; 16-byte vector accesses where alignment allows. Arithmetic in float (double for f64), as on the CPU;
// the device's expf differs from the host's by at most a couple of float ulps.
// Callers (coat/ops) validate shapes, dtypes and devices.
#pragma once

#include "coat/core/tensor.h"

namespace coat::cuda {

/// y = silu(gate) * up.
void swiglu(const Tensor& gate, const Tensor& up, Tensor& y);
/// dgate = dy * up * silu'(gate), dup = dy * silu(gate).
void swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up, Tensor& dgate, Tensor& dup);
/// Packed rows: gu [N, 2F] (gate = gu[:, :F], up = gu[:, F:]) -> y [N, F] = silu(gate) * up; any leading
/// dimensions, F = y.size(-1). row_max (when not null; f32 and bf16): f32 [N], max |y| of each row as
/// stored, NaN and inf propagated (0 for empty rows).
void swiglu_packed(const Tensor& gu, Tensor& y, Tensor* row_max = nullptr);
/// swiglu_packed with row_max, and in the same kernel gu's 1x16 E4M3 copy (codes [N, 2F], scale_inv [N, 2F / 16]:
/// the bytes of quantize_per_group(gu, 16, E4M3)). Returns false, writing nothing, where the vectorised kernel
/// does not apply (F not a multiple of 16, pointers not aligned): the caller then takes the separate passes.
bool swiglu_packed_compress(const Tensor& gu, Tensor& y, Tensor& row_max, Tensor& codes, Tensor& scale_inv);
/// dgu [N, 2F] = [dgate | dup] from dy [N, F] and gu.
void swiglu_packed_backward(const Tensor& dy, const Tensor& gu, Tensor& dgu, Tensor* row_max = nullptr);
/// The same from gu's compressed copy (E4M3 codes [..., 2F], F32 scale_inv per 16 elements), restored inside
/// the kernel to dgu's dtype as dequantize_per_group would.
void swiglu_packed_backward_compressed(const Tensor& dy, const Tensor& codes, const Tensor& scale_inv, Tensor& dgu,
                                       Tensor* row_max = nullptr);

}  // namespace coat::cuda
