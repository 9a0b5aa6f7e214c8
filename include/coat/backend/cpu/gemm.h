// cpu GEMM (the reference backend): OpenBLAS for F32/F64; BF16/F16 through F32 (exact products and FP32
// accumulation, one round-to-nearest-even to the output type at the end).
#pragma once

#include "coat/core/tensor.h"

namespace coat::cpu {

/// out[M,N] = alpha * op(a) @ op(b) + beta * out, all row-major, 2-D and contiguous.
/// a is [M,K] ([K,M] if transpose_a), b is [K,N] ([N,K] if transpose_b). a and b share a dtype:
/// F32 -> out F32; F64 -> out F64; BF16 or F16 -> out of the same type or F32.
/// When beta == 0, out is only written (NaNs in it do not propagate).
void matmul(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b, Tensor& out,
            float alpha = 1.0f, float beta = 0.0f);

}  // namespace coat::cpu
