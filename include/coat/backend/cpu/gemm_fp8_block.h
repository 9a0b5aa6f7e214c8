// cpu 128-block-scaled FP8 GEMM: the reference of ops::matmul_fp8_block. Each operand is dequantized exactly
// to double (an FP8 value times an f32 scale_inv has at most 4 + 24 significant bits), products and the sum
// over K are taken in double (in order k = 0..K-1), and the result is rounded once to the output dtype.
#pragma once

#include "coat/core/tensor.h"

namespace coat::cpu {

/// out[m,n] = round(c + sum_k (a[m,k] * sa[m, k/128]) * (b[n,k] * sb(n, k/128))) in double, with
/// c = out[m,n] when `accumulate`, else 0. a_codes [M,K] and b_codes [N,K]: FP8 (E4M3 or E5M2), contiguous,
/// K a multiple of 128; a_scale_inv: F32 in the 1x128 layout; b_block_rows 128: b_scale_inv F32 in the 128x128
/// layout, sb(n, kb) its block (n/128, kb), N a multiple of 128; b_block_rows 1: b_scale_inv F32 in the 1x128
/// layout, sb(n, kb) the scale of row n's group kb (coat/backend/block_scale_layout.h); out [M,N]: BF16 or F32,
/// contiguous. All on the CPU.
void matmul_fp8_block(const Tensor& a_codes, const Tensor& a_scale_inv, const Tensor& b_codes,
                      const Tensor& b_scale_inv, int64_t b_block_rows, Tensor& out, bool accumulate);

}  // namespace coat::cpu
