// Device-agnostic matrix product (OpenBLAS on the CPU, cuBLASLt on CUDA).
#pragma once

#include <optional>

#include "coat/core/tensor.h"

namespace coat::ops {

/// op(a) @ op(b) with op = transpose when asked; 2-D operands of one float dtype (F32, F64 on the CPU,
/// BF16, F16). The result has `out_dtype` (default: the operands' dtype); BF16/F16 accumulate in FP32.
Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a = false, bool transpose_b = false,
              std::optional<DType> out_dtype = std::nullopt);
/// out = alpha * op(a) @ op(b) + beta * out, out contiguous.
void matmul_(const Tensor& a, const Tensor& b, Tensor& out, bool transpose_a = false, bool transpose_b = false,
             float alpha = 1.0f, float beta = 0.0f);

}  // namespace coat::ops
