// cuda kernels: 128-block FP8 quantization (1x128 groups, 128x128 blocks) and its dequantization. Same
// functions as the CPU reference backend/cpu/quantize_block.h, and the same bytes: both run the scalar math of
// coat/backend/quantize_math.h and write the scale layouts of coat/backend/block_scale_layout.h (those
// cuBLASLt's VEC128_32F / BLK128x128_32F modes read). Kernels run on the stream of the tensors' context;
// nothing waits for them (no host synchronisation).
//
// Conventions shared by both backends:
//  - Inputs are 2-D f32, bf16 or f16, read as float; every tensor is contiguous (checked, [op] messages).
//  - FP8 code tensors have dtype e4m3 or e5m2, which is the format used; codes have the input's shape
//    (quantize_1x128_transposed: its transpose's).
//  - Per block: scale = fmt_max / amax (NaN- and inf-propagating amax; amax == 0 gives scale 1; a non-finite
//    amax gives scale NaN, so the whole block's codes are NaN), code = fp8(x * scale) with `sat`,
//    scale_inv = 1 / scale written at the block's place in the cuBLASLt layout; padding entries hold 1.0f.
#pragma once

#include "coat/core/float_formats.h"
#include "coat/core/tensor.h"

namespace coat::cuda {

/// x [M,K] (K % 128 == 0) -> codes [M,K], scale_inv f32 [K/128, round_up(M,4)] (one per 1x128 group).
void quantize_1x128(const Tensor& x, Fp8Saturation sat, Tensor& codes, Tensor& scale_inv);
/// x [M,K] (M % 128 == 0) -> the 1x128 quantization of x^T: codes [K,M], scale_inv f32 [M/128, round_up(K,4)]
/// (one per 128 consecutive rows of a column of x), the bytes quantize_1x128 gives for a contiguous x^T.
void quantize_1x128_transposed(const Tensor& x, Fp8Saturation sat, Tensor& codes, Tensor& scale_inv);
void quantize_1x128_pair(const Tensor& x, Fp8Saturation sat, Tensor& codes, Tensor& scale_inv, Tensor& codes_t,
                         Tensor& scale_inv_t);
/// w [N,K] (N, K % 128 == 0) -> codes [N,K], scale_inv f32 [N/128, round_up(K/128,4)] (one per 128x128 block).
void quantize_128x128(const Tensor& w, Fp8Saturation sat, Tensor& codes, Tensor& scale_inv);
/// quantize_128x128 with each block's amax taken from maxima f32 [N/128, K/128] instead of w (the largest
/// over the pieces of a weight quantised apart, e.g. a sharded weight's slices).
void quantize_128x128_with_maxima(const Tensor& w, const Tensor& maxima, Fp8Saturation sat, Tensor& codes,
                                  Tensor& scale_inv);
/// The scale_inv quantize_128x128 writes for blocks with amaxes maxima f32 [nb, kb] (format fmt): f32
/// [nb, round_up(kb, 4)], padding 1.0f.
void scale_inv_128x128_from_maxima(const Tensor& maxima, DType fmt, Tensor& scale_inv);
/// out = float(code) * scale_inv of its 1x128 group; out f32, bf16 or f16 of codes' shape.
void dequantize_1x128(const Tensor& codes, const Tensor& scale_inv, Tensor& out);
/// out = float(code) * scale_inv of its 128x128 block; out f32, bf16 or f16 of codes' shape.
void dequantize_128x128(const Tensor& codes, const Tensor& scale_inv, Tensor& out);

}  // namespace coat::cuda
