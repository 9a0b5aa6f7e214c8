// cuda FP8 GEMM on cuBLASLt (Hopper / Ada: compute capability 8.9 or newer). Plans (descriptors + algorithm)
// are cached per problem in the context's MatmulPlanCache, like the BF16 GEMM.
#pragma once

#include "coat/core/tensor.h"

namespace coat::cuda {

/// out[M,N] = (sa * sb) * a_codes[M,K] @ b_codes[N,K]^T (+ out when `accumulate`), FP32 accumulation.
/// a_codes, b_codes: FP8, contiguous, 16-byte aligned, not both E5M2; K and N multiples of 16.
/// a_scale_inv, b_scale_inv: one F32 each on the same context, handed to cuBLASLt as device pointers
/// (A_SCALE_POINTER / B_SCALE_POINTER), so the value at call time on the stream is used and nothing is
/// read on the host. out: BF16 or F32, contiguous, 16-byte aligned. Queued on the context's stream (async).
/// fast_accum: CUBLASLT_MATMUL_DESC_FAST_ACCUM.
/// The cached descriptor's scale pointers are set on each call: a context's matmuls are issued from one
/// thread at a time (as its single stream implies).
void matmul_fp8(const Tensor& a_codes, const Tensor& a_scale_inv, const Tensor& b_codes,
                const Tensor& b_scale_inv, Tensor& out, bool accumulate, bool fast_accum);

}  // namespace coat::cuda
