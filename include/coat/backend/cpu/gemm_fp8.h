// cpu FP8 GEMM: the reference of the FP8 matmul. Every code decodes exactly to double, products and the sum
// over K are taken in double (in order k = 0..K-1), the scales multiply the sum, and the result is rounded
// once to the output dtype.
#pragma once

#include "coat/core/tensor.h"

namespace coat::cpu {

/// out[m,n] = round(c + (double(sa) * double(sb)) * sum_k double(a[m,k]) * double(b[n,k])) with c = out[m,n]
/// when `accumulate`, else 0. a_codes [M,K], b_codes [N,K]: FP8 (E4M3 or E5M2), contiguous; a_scale_inv,
/// b_scale_inv: one F32 each; out [M,N]: BF16 or F32, contiguous. All on the CPU.
void matmul_fp8(const Tensor& a_codes, const Tensor& a_scale_inv, const Tensor& b_codes,
                const Tensor& b_scale_inv, Tensor& out, bool accumulate);

}  // namespace coat::cpu
