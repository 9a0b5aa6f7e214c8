// Device-agnostic 128-block-scaled FP8 matrix product ("fp8_block" GEMM mode, DeepSeek-V3 style): activations
// quantized per 1x128 group, weights per 128x128 block (ops::quantize_1x128 / quantize_128x128); for a weight
// gradient both operands per 1x128 group. cuBLASLt (CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F and
// _BLK128x128_32F, Hopper only) on CUDA; an FP64 reference on the CPU.
#pragma once

#include "coat/core/tensor.h"
#include "coat/ops/quantize_block.h"

namespace coat::ops {

/// out[m,n] = sum_k A[m,k] * B[n,k], or out += that when `accumulate` (beta = 1), where A = dequantized a
/// (1x128-quantized, codes [M,K]) and B = dequantized b (codes [N,K], 128x128- or 1x128-quantized): the "TN"
/// layout of cuBLASLt's FP8 GEMMs, both operands row-major with K contiguous. To multiply by a transposed
/// weight, quantize the transpose. The two kinds of b are the two products of a block-scaled linear layer:
/// 128x128 for a weight (fprop, dgrad: cuBLASLt's VEC128_32F x BLK128x128_32F, "1D x 2D"), 1x128 for an
/// activation gradient's wgrad, where both operands are grouped along the token dimension (VEC128_32F for both,
/// "1D x 1D"). 128x128 by 128x128 ("2D x 2D") is not offered by cuBLASLt and is refused here.
/// Requirements (checked on both backends, so the CPU reference keeps cuBLASLt's contract): a 1x128-blocked,
/// b 128x128- or 1x128-blocked, their scale_inv in the layouts of ops::Fp8Blocked; K a multiple of 128; N a
/// multiple of 128, and with a 1x128-blocked b M too (cuBLASLt refused 132 for either with 1x128 groups on both); M a multiple of 4 (a 1x128 scale
/// tensor's leading dimension is then its row count, see block_scale_layout.h); formats E4M3 x E4M3, E5M2 x
/// E4M3 or E4M3 x E5M2; out [M,N], contiguous, BF16 or F32, on the operands' context.
/// CUDA: one cuBLASLt call (compute capability 9.0 and cuBLAS 12.9+), the scales read by the GPU through
/// device pointers (no host synchronisation); per 128-wide K block the partial products are scaled by the two
/// block scales and summed in FP32. CPU: each operand dequantized exactly to double (code * scale_inv), products
/// and the sum over k = 0..K-1 in double, one rounding to out's dtype (the reference).
void matmul_fp8_block(const Fp8Blocked& a, const Fp8Blocked& b, Tensor& out, bool accumulate = false);
/// The same into a new [M,N] tensor of `out_dtype` (BF16 or F32).
Tensor matmul_fp8_block(const Fp8Blocked& a, const Fp8Blocked& b, DType out_dtype = DType::BF16);

}  // namespace coat::ops
