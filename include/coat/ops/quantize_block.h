// Device-agnostic 128-block FP8 quantization (DeepSeek-V3 style): activations per 1x128 group along K, weights
// per 128x128 block, each block with its own scale, the scales stored exactly as cuBLASLt's block-scaled GEMM
// reads them (ops::matmul_fp8_block). Scales stay on the device.
#pragma once

#include "coat/core/float_formats.h"
#include "coat/core/tensor.h"

namespace coat::ops {

/// 128-block quantized FP8 tensor: value[r,c] = decode(codes[r,c]) * scale_inv[its block].
/// Per block: scale = fmt_max / amax of the block (1 when the amax is 0; NaN, making the block's codes NaN,
/// when it is not finite), codes = fp8(x * scale), scale_inv = 1 / scale (the same scalar math as
/// quantize_per_tensor / quantize_per_group, and byte-identical on the CPU and CUDA backends).
/// scale_inv is F32 in the layout of cuBLASLt's scale modes (coat/backend/block_scale_layout.h):
///  - 1x128 (block_rows 1, codes [M,K]): [K/128, round_up(M,4)], scale of row m, group kb at kb*ld + m
///    (CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F: rows contiguous, "M-major").
///  - 128x128 (block_rows 128, codes [N,K]): [N/128, round_up(K/128,4)], scale of block (nb,kb) at nb*ld + kb
///    (CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F: K blocks contiguous).
/// Padding entries (rows past M, K blocks past K/128) hold 1.0f.
struct Fp8Blocked {
  Tensor codes;
  Tensor scale_inv;
  int block_rows = 0;  // 1 (quantize_1x128) or 128 (quantize_128x128)
  int block_cols = 0;  // 128
};

/// x [M,K] (f32, bf16 or f16; K a multiple of 128; any strides) -> one scale per 1x128 group along K.
/// `category`: where the codes and scales are accounted (e.g. Weights for a model's FP8 weight copies).
Fp8Blocked quantize_1x128(const Tensor& x, DType fmt, Fp8Saturation sat = Fp8Saturation::Saturate,
                          MemoryCategory category = MemoryCategory::Activations);
/// x [M,K] (f32, bf16 or f16; M a multiple of 128; any strides) -> the 1x128 quantization of x^T [K,M]: groups
/// of 128 consecutive rows of one column of x, codes [K,M] and scale_inv [M/128, round_up(K,4)], byte for
/// byte what quantize_1x128(contiguous(x^T)) gives, without materialising x^T (one pass over x; the CUDA
/// kernel transposes tiles through shared memory). For the "1D x 1D" wgrad product, whose K is x's rows.
Fp8Blocked quantize_1x128_transposed(const Tensor& x, DType fmt, Fp8Saturation sat = Fp8Saturation::Saturate,
                                     MemoryCategory category = MemoryCategory::Activations);
/// An operand of both an fprop/dgrad GEMM and a wgrad GEMM: its 1x128 groups along K (`rows`, what
/// quantize_1x128 gives) and along M (`transposed`, what quantize_1x128_transposed gives).
struct Fp8BlockedPair {
  Fp8Blocked rows;
  Fp8Blocked transposed;
};
/// quantize_1x128(x) and quantize_1x128_transposed(x) byte for byte, from one read of x (the CUDA kernel holds
/// 128x128 tiles in shared memory). x [M,K] with M and K multiples of 128.
Fp8BlockedPair quantize_1x128_pair(const Tensor& x, DType fmt, Fp8Saturation sat = Fp8Saturation::Saturate,
                                   MemoryCategory category = MemoryCategory::Activations);
/// w [N,K] (f32, bf16 or f16; N and K multiples of 128; any strides) -> one scale per 128x128 block.
Fp8Blocked quantize_128x128(const Tensor& w, DType fmt, Fp8Saturation sat = Fp8Saturation::Saturate,
                            MemoryCategory category = MemoryCategory::Activations);
/// max |w| of every 128x128 block of w [N,K] (f32, bf16 or f16; N and K multiples of 128; any strides): F32
/// [N/128, K/128], the amaxes quantize_128x128 takes its scales from (NaN and inf propagate).
Tensor amax_128x128(const Tensor& w);
/// quantize_128x128 with each block's amax given, maxima F32 [N/128, K/128] on w's device, instead of taken
/// from w: a weight quantised in pieces (a sharded weight's slices, each padded to whole blocks with zeros,
/// with every block's largest amax over the pieces) gets the codes and scales the whole weight would.
/// quantize_128x128(w) is quantize_128x128_with_maxima(w, amax_128x128(w)) byte for byte.
Fp8Blocked quantize_128x128_with_maxima(const Tensor& w, const Tensor& maxima, DType fmt,
                                        Fp8Saturation sat = Fp8Saturation::Saturate,
                                        MemoryCategory category = MemoryCategory::Activations);
/// The scale_inv that quantize_128x128 writes for blocks whose amaxes are maxima F32 [N/128, K/128]: F32
/// [N/128, round_up(K/128, 4)] in the cuBLASLt layout, padding 1.0f, without the codes.
Tensor scale_inv_128x128_from_maxima(const Tensor& maxima, DType fmt,
                                     MemoryCategory category = MemoryCategory::Activations);
/// The 128x128-blocked transpose of q (128x128-quantized w [N,K]): codes [K,N] = q.codes^T and the scales of
/// the transposed blocks, i.e. byte for byte what quantize_128x128(w^T) gives (a block of w^T holds the
/// elements of one block of w, so it has the same amax and scale), made from the codes without w: no second
/// amax pass and no high-precision copy of w^T. Allocated in the memory category of q's codes.
Fp8Blocked transpose_128x128(const Fp8Blocked& q);
/// The f32 product float(code) * scale_inv of its block (one rounding), converted to out_dtype (F32 or BF16,
/// nearest even), as dequantize(Fp8PerGroup) does.
Tensor dequantize(const Fp8Blocked& q, DType out_dtype = DType::F32);

}  // namespace coat::ops
