// cuda kernels: FP8 quantization (amax, scales, per-tensor and 1xG per-group quantize / dequantize, fused
// quantize + transpose). Same functions as the CPU reference backend/cpu/quantize.h, and the same bytes:
// both run the scalar math of coat/backend/quantize_math.h. Kernels run on the stream of the tensors'
// context and nothing waits for them (no host synchronisation).
//
// Conventions shared by both backends:
//  - Inputs x are f32, bf16 or f16, read as float; every tensor is contiguous (checked, [op] messages).
//  - FP8 code tensors have dtype e4m3 or e5m2, which is the format used.
//  - Scales and amaxes are f32 tensors on the tensor's device; nothing is read back to the host.
//  - amax is max |x| with NaN and inf propagated (a NaN anywhere gives NaN, never hidden).
//  - scale = fmt_max / amax; amax == 0 gives scale 1; a non-finite amax gives scale NaN (so codes become
//    NaN); an amax so small that the quotient overflows gives FLT_MAX. scale_inv = 1 / scale.
//  - code = fp8(x * scale) rounded to nearest even, `sat` deciding what happens past the format's max.
//  - Any NaN produced is the canonical 0x7FFFFFFF (GPUs and CPUs propagate NaN payloads differently).
#pragma once

#include <cstdint>

#include "coat/core/float_formats.h"
#include "coat/core/tensor.h"

namespace coat::cuda {

/// Max |x| per group of `group_size` contiguous elements along the last dim (which it must divide):
/// out_amax is f32 [..., K / group_size].
void group_amax(const Tensor& x, int64_t group_size, Tensor& out_amax);
/// Max |x| over the whole tensor into the one-element f32 tensor out_amax (0 for an empty tensor).
void tensor_amax(const Tensor& x, Tensor& out_amax);
/// scale = fmt_max / amax and scale_inv = 1 / scale from a one-element amax; fmt is e4m3 or e5m2.
void compute_scale(const Tensor& amax, DType fmt, Tensor& scale, Tensor& scale_inv);
/// The same with amax = max |maxima| over an f32 tensor of maxima (e.g. a producer's row maxima; NaN and
/// inf propagate as in tensor_amax): one reduction of the small tensor instead of a pass over the data.
void compute_scale_from_maxima(const Tensor& maxima, DType fmt, Tensor& scale, Tensor& scale_inv);
/// codes = fp8(x * scale), scale a one-element f32 tensor; codes have x's shape.
void quantize_per_tensor(const Tensor& x, const Tensor& scale, Fp8Saturation sat, Tensor& codes);
/// out = float(codes) * scale_inv, out f32, bf16 or f16 (rounded to nearest even) of codes' shape.
void dequantize_per_tensor(const Tensor& codes, const Tensor& scale_inv, Tensor& out);
/// x [M, K] -> codes [M, K] and codes_t [K, M] = its transpose, one scale, one pass over x.
void quantize_transpose_per_tensor(const Tensor& x, const Tensor& scale, Fp8Saturation sat, Tensor& codes,
                                   Tensor& codes_t);
/// Per 1 x group_size group along the last dim: scale = fmt_max / group amax, codes = fp8(x * scale),
/// scale_inv f32 [..., K / group_size] = 1 / scale. The format is codes' dtype.
void quantize_per_group(const Tensor& x, int64_t group_size, Fp8Saturation sat, Tensor& codes,
                        Tensor& scale_inv);
/// out = float(codes) * scale_inv[group], out f32, bf16 or f16.
void dequantize_per_group(const Tensor& codes, const Tensor& scale_inv, int64_t group_size, Tensor& out);

}  // namespace coat::cuda
