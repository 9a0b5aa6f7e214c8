// Internal: what the cpu FP8 GEMM references share (gemm_fp8.cpp, per-tensor scales; gemm_fp8_block.cpp,
// 128-block scales): the operand checks, the exact decode of the codes to double, and the product
// out[M,N] = A[M,K] B[N,K]^T with double products and sums (in order k = 0..K-1) and one final rounding.
// The checks throw InvalidArgument with "[op] ..." messages, op being the calling GEMM's name.
#pragma once

#include <cstdint>
#include <vector>

#include "coat/core/tensor.h"

namespace coat::cpu::fp8gemm {

/// The checks both GEMMs start with, in this order: all five tensors defined, all on the CPU, the codes FP8.
void check_operands(const Tensor& a_codes, const Tensor& a_scale_inv, const Tensor& b_codes,
                    const Tensor& b_scale_inv, const Tensor& out, const char* op);

struct Dims {
  int64_t m;
  int64_t k;
  int64_t n;
};
/// a, b and out 2-D, forming [M,K] x [N,K]^T -> [M,N]; their M, K and N.
Dims check_shapes(const Tensor& a_codes, const Tensor& b_codes, const Tensor& out, const char* op);

/// Every code of an FP8 tensor decoded (exactly) to double.
std::vector<double> decode(const Tensor& codes);

/// out[i,j] = round(c + scale * sum_p a[i*K+p] * b[j*K+p]), the sum in double in order p = 0..K-1, c = out[i,j]
/// when `accumulate`, else 0; one rounding to out's dtype.
void store_product(const std::vector<double>& a, const std::vector<double>& b, Dims dims, double scale, Tensor& out,
                   bool accumulate);

}  // namespace coat::cpu::fp8gemm
