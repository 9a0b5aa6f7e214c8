// Device-agnostic FP8 matrix product (cuBLASLt on CUDA; an exact FP64 reference on the CPU): the GEMM of
// COAT's FP8 linear layers. Operands are per-tensor quantized FP8 (ops::Fp8PerTensor).
#pragma once

#include "coat/core/tensor.h"
#include "coat/ops/quantize.h"

namespace coat::ops {

/// out = (sa * sb) * A @ B^T, or out += (sa * sb) * A @ B^T when `accumulate` (beta = 1), where A = a.codes
/// [M,K] and B = b.codes [N,K] (the "TN" layout cuBLASLt's FP8 GEMM needs: both operands row-major with K
/// contiguous) and sa = a.scale_inv, sb = b.scale_inv (one F32 each, on the operands' device: dequantised
/// value = code * scale_inv). a.codes_t / b.codes_t are not used: to multiply by a transpose, pass an
/// Fp8PerTensor whose codes are that transpose (e.g. {w.codes_t, w.scale, w.scale_inv}).
/// Formats: E4M3 x E4M3, E5M2 x E4M3 or E4M3 x E5M2 (cuBLASLt has no E5M2 x E5M2). K and N must be
/// multiples of 16 (cuBLASLt FP8). out: [M,N], contiguous, BF16 or F32, on the operands' context.
/// CUDA: FP32 accumulation, scales read by the GPU through device pointers (no host synchronisation);
/// `fast_accum` sets CUBLASLT_MATMUL_DESC_FAST_ACCUM (faster, fewer accumulator bits on Hopper: COAT's
/// recipe uses it for fprop only). CPU: products and sums in double, one rounding to out's dtype at the
/// end (the reference); fast_accum is ignored there.
void matmul_fp8(const Fp8PerTensor& a, const Fp8PerTensor& b, Tensor& out, bool accumulate = false,
                bool fast_accum = false);
/// The same into a new [M,N] tensor of `out_dtype` (BF16 or F32).
Tensor matmul_fp8(const Fp8PerTensor& a, const Fp8PerTensor& b, DType out_dtype = DType::BF16,
                  bool fast_accum = false);

}  // namespace coat::ops
