// cuda GEMM on cuBLASLt: F32 (exact FP32 math, no TF32), BF16 and F16 inputs with FP32 accumulation.
// Plans (descriptors + algorithm) are cached per problem in the context's MatmulPlanCache.
#pragma once

#include "coat/core/tensor.h"

namespace coat::cuda {

/// out[M,N] = alpha * op(a) @ op(b) + beta * out, all row-major, 2-D, contiguous, on one CudaContext.
/// a is [M,K] ([K,M] if transpose_a), b is [K,N] ([N,K] if transpose_b). a and b share a dtype:
/// F32 -> out F32; BF16 or F16 -> out of the same type or F32. Queued on the context's stream (async).
/// When beta == 0, out is only written.
void matmul(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b, Tensor& out,
            float alpha = 1.0f, float beta = 0.0f);

}  // namespace coat::cuda
