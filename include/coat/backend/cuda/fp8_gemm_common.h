// Internal: what the cuda FP8 GEMMs share (gemm_fp8.cpp, per-tensor scales; gemm_fp8_block.cpp, 128-block
// scales). Both compute out[M,N] = A[M,K] B[N,K]^T as out^T = B A^T in cuBLASLt's column-major terms: the
// "TN" form of its FP8 kernels, with cuBLASLt's A our b (and b's scale), its B our a (and a's scale).
// The checks throw InvalidArgument with "[op] ..." messages, op being the calling GEMM's name.
#pragma once

#include <cublasLt.h>

#include <cstdint>

#include "coat/backend/cuda/cuda_context.h"
#include "coat/backend/cuda/matmul_plan_cache.h"
#include "coat/core/tensor.h"

namespace coat::cuda::fp8gemm {

/// cuBLASLt FP8: the A, B and C/D addresses must be 16-byte aligned.
inline constexpr uint32_t kAlignment = 16;

/// The checks both GEMMs start with, in this order: all five tensors defined; out on a CUDA device; codes,
/// scales and out on out's context; a, b and out 2-D and contiguous; a [M,K], b [N,K], out [M,N].
void check_operands(const Tensor& a_codes, const Tensor& a_scale_inv, const Tensor& b_codes,
                    const Tensor& b_scale_inv, const Tensor& out, const char* op);

/// cuBLASLt data types of a's and b's codes.
struct OperandTypes {
  cudaDataType_t a;
  cudaDataType_t b;
};
/// The codes' dtypes as cuBLASLt types (e4m3 or e5m2; otherwise an error naming the operand); refuses
/// e5m2 x e5m2, for which cuBLASLt has no GEMM.
OperandTypes operand_types(const Tensor& a_codes, const Tensor& b_codes, const char* op);

/// True when there is nothing to multiply: M or N is 0, or K is 0 (an empty sum), in which case out is zeroed
/// on the context's stream unless `accumulate`.
bool finish_if_empty(CudaContext& ctx, Tensor& out, int64_t m, int64_t n, int64_t k, bool accumulate);

/// Largest power of two (<= 256) dividing the address.
uint32_t alignment_of(const void* ptr);

/// Alignments in cuBLASLt's terms: a of its A (our b), b of its B (our a), c of C/D (out).
struct Alignments {
  uint32_t a;
  uint32_t b;
  uint32_t c;
};
/// The alignments of the codes and out, each checked to be at least kAlignment.
Alignments checked_alignments(const Tensor& a_codes, const Tensor& b_codes, const Tensor& out, const char* op);

/// The plan key of the TN problem out^T[N,M] = b[N,K] a[M,K]^T: FP32 compute and alpha/beta, C/D of out's
/// dtype (BF16 or F32), beta_zero = !accumulate. Scale modes are left at per-tensor (0).
MatmulPlanKey tn_plan_key(int64_t m, int64_t n, int64_t k, OperandTypes types, DType out_dtype, bool accumulate,
                          bool fast_accum, Alignments align);

/// The plan key of the 128-block-scaled GEMM (cuda::matmul_fp8_block): tn_plan_key without fast accumulation
/// (cuBLASLt has none for these modes), with cuBLASLt's B scale mode (our a, 1x128 groups) VEC128_32F and its
/// A scale mode (our b) BLK128x128_32F for b_block_rows 128 (a weight), VEC128_32F for 1 (a weight gradient's
/// operand). Throws NotImplemented when built with cuBLAS older than 12.9 (no such scale modes).
MatmulPlanKey block_plan_key(int64_t m, int64_t n, int64_t k, OperandTypes types, DType out_dtype, bool accumulate,
                             int64_t b_block_rows, Alignments align);

/// Sets the plan's scale pointers (cuBLASLt's A scale is b_scale_inv, its B scale a_scale_inv: device
/// pointers, read by the GPU when the kernel runs, with no host synchronisation; a cached descriptor keeps
/// those of the last call, so every call sets its own) and queues the matmul on the context's stream, with
/// alpha = 1 and beta = 1 when `accumulate`, else 0.
void run(CudaContext& ctx, const MatmulPlan& plan, const Tensor& a_codes, const Tensor& a_scale_inv,
         const Tensor& b_codes, const Tensor& b_scale_inv, Tensor& out, bool accumulate);

}  // namespace coat::cuda::fp8gemm
