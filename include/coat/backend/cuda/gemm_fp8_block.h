// cuda 128-block-scaled FP8 GEMM on cuBLASLt's block scale modes (CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F for
// 1x128-quantized operands, _BLK128x128_32F for the 128x128-quantized weights; cuBLAS 12.9+, compute
// capability 9.0). Plans are cached per problem in the context's MatmulPlanCache, like the other GEMMs.
#pragma once

#include "coat/core/tensor.h"

namespace coat::cuda {

/// out[M,N] = sum_k (a[m,k] * sa[m,k/128]) * (b[n,k] * sb(n,k/128)) (+ out when `accumulate`), FP32
/// accumulation. a_codes [M,K], b_codes [N,K]: FP8, contiguous, 16-byte aligned, not both E5M2; K a multiple of
/// 128, M a multiple of 4. a_scale_inv: F32 [K/128, M] (the 1x128 layout of coat/backend/block_scale_layout.h).
/// b_block_rows 128 (a weight, "1D x 2D"): N a multiple of 128, b_scale_inv F32 [N/128, round_up(K/128,4)]
/// (the 128x128 layout), cuBLASLt scale mode BLK128x128_32F; b_block_rows 1 (a weight gradient's operand,
/// "1D x 1D"): N a multiple of 4, b_scale_inv F32 [K/128, N] (the 1x128 layout), scale mode VEC128_32F. Scale
/// tensors 16-byte aligned on the same context, handed to cuBLASLt as device pointers. out: BF16 or F32,
/// contiguous, 16-byte aligned. Queued on the context's stream (async). No fast accumulation (cuBLASLt has
/// none for these modes). The cached descriptor's scale pointers are set on each call: a context's matmuls are
/// issued from one thread at a time (as its single stream implies).
void matmul_fp8_block(const Tensor& a_codes, const Tensor& a_scale_inv, const Tensor& b_codes,
                      const Tensor& b_scale_inv, int64_t b_block_rows, Tensor& out, bool accumulate);

}  // namespace coat::cuda
