// cuda GEMM: row-major problems mapped onto column-major cuBLASLt, with cached plans.
//
// Row-major to column-major: a row-major [r,c] matrix is, in memory, a column-major [c,r] matrix (its
// transpose) with leading dimension c. So out = op(a) @ op(b) (row-major, [M,N]) is computed as
// out^T = op(b)^T @ op(a)^T in column-major terms: cuBLASLt's A is our b, its B is our a, m = N, n = M,
// k = K, and each operand keeps its own transpose flag.
#include "coat/backend/cuda/gemm.h"
#include "coat/backend/dense_operands.h"

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/cuda_context.h"
#include "coat/core/error.h"

namespace coat::cuda {

namespace {

constexpr const char* kOp = "matmul";

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F32:
      return CUDA_R_32F;
    case DType::BF16:
      return CUDA_R_16BF;
    case DType::F16:
      return CUDA_R_16F;
    default:
      break;
  }
  throw NotImplemented(::coat::detail::concat("[", kOp, "] cuda: no cuBLASLt type for ", dtype_name(t)));
}

/// Largest power of two (<= 256) dividing the address: what the kernel may assume about the pointer.
uint32_t alignment_of(const void* ptr) {
  const auto address = reinterpret_cast<uintptr_t>(ptr);
  uint32_t align = 256;
  while (align > 1 && (address % align) != 0) align /= 2;
  return align;
}

}  // namespace

void matmul(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b, Tensor& out, float alpha,
            float beta) {
  COAT_ARG_CHECK(a.defined() && b.defined() && out.defined(), kOp, "undefined tensor argument");
  COAT_ARG_CHECK(out.device().is_cuda(), kOp, "cuda backend given out on ", out.device().str());
  COAT_ARG_CHECK(a.context() == out.context() && b.context() == out.context(), kOp,
                 "a, b and out must belong to the same CudaContext (same device and stream), got ",
                 a.device().str(), ", ", b.device().str(), " and ", out.device().str());
  COAT_ARG_CHECK(a.dim() == 2 && b.dim() == 2 && out.dim() == 2, kOp, "a, b and out must be 2-D, got shapes ",
                 shape_str(a.shape()), ", ", shape_str(b.shape()), " and ", shape_str(out.shape()));
  COAT_ARG_CHECK(is_dense(a) && is_dense(b) && is_dense(out), kOp, "a, b and out must be contiguous (a ",
                 is_dense(a) ? "is" : "is not", ", b ", is_dense(b) ? "is" : "is not", ", out ",
                 is_dense(out) ? "is" : "is not", ")");
  const int64_t m = transpose_a ? a.size(1) : a.size(0);
  const int64_t k = transpose_a ? a.size(0) : a.size(1);
  const int64_t k_b = transpose_b ? b.size(1) : b.size(0);
  const int64_t n = transpose_b ? b.size(0) : b.size(1);
  COAT_ARG_CHECK(k == k_b, kOp, "shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()),
                 " do not match (transpose_a=", transpose_a, ", transpose_b=", transpose_b,
                 "): inner dimensions ", k, " and ", k_b);
  COAT_ARG_CHECK(out.size(0) == m && out.size(1) == n, kOp, "out has shape ", shape_str(out.shape()),
                 ", expected ", shape_str({m, n}), " for a ", shape_str(a.shape()), " and b ",
                 shape_str(b.shape()), " (transpose_a=", transpose_a, ", transpose_b=", transpose_b, ")");
  COAT_ARG_CHECK(!ranges_overlap(out, a) && !ranges_overlap(out, b), kOp, "out must not overlap a or b");
  COAT_ARG_CHECK(a.dtype() == b.dtype(), kOp, "a and b must have the same dtype, got ", dtype_name(a.dtype()),
                 " and ", dtype_name(b.dtype()));
  const DType in = a.dtype();
  const bool dtypes_ok =
      (in == DType::F32 && out.dtype() == DType::F32) ||
      ((in == DType::BF16 || in == DType::F16) && (out.dtype() == in || out.dtype() == DType::F32));
  COAT_CHECK(dtypes_ok, NotImplemented, "[", kOp, "] cuda: no kernel for inputs ", dtype_name(in),
             " and out ", dtype_name(out.dtype()), " (supported: f32->f32, bf16->bf16/f32, f16->f16/f32)");

  auto& ctx = static_cast<CudaContext&>(*out.context());
  if (m == 0 || n == 0) return;
  if (k == 0) {  // an empty sum: out = beta * out. cuBLASLt is not asked about k = 0.
    if (beta == 0.0f) {
      // All-zero bits are +0 in every float format.
      COAT_CUDA_CHECK(cudaMemsetAsync(out.data_ptr(), 0, out.nbytes(), ctx.stream()));
      return;
    }
    COAT_CHECK(beta == 1.0f, NotImplemented, "[", kOp, "] cuda: K = 0 with beta = ", beta,
               " (only beta 0 or 1 are supported for an empty product)");
    return;
  }

  MatmulPlanKey key;
  key.m = static_cast<uint64_t>(n);
  key.n = static_cast<uint64_t>(m);
  key.k = static_cast<uint64_t>(k);
  // cuBLASLt's A is our b: stored row-major [K,N] (or [N,K] when transposed), i.e. column-major with ld = its
  // row-major column count. Likewise its B is our a.
  key.trans_a = transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  key.trans_b = transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  key.lda = transpose_b ? k : n;
  key.ldb = transpose_a ? m : k;
  key.ldc = n;
  key.a_type = cuda_type(in);
  key.b_type = key.a_type;
  key.c_type = cuda_type(out.dtype());
  key.compute_type = CUBLAS_COMPUTE_32F;  // FP32 accumulation; plain FP32 math for F32 inputs (no TF32)
  key.scale_type = CUDA_R_32F;
  key.beta_zero = beta == 0.0f;
  key.align_a = alignment_of(b.data_ptr());
  key.align_b = alignment_of(a.data_ptr());
  key.align_c = alignment_of(out.data_ptr());

  const MatmulPlan& plan = ctx.matmul_plans().get(ctx.cublaslt(), key, ctx.workspace_bytes());
  // C and D are the same buffer with the same layout (in-place), which cuBLASLt allows.
  COAT_CUBLAS_CHECK(cublasLtMatmul(ctx.cublaslt(), plan.desc, &alpha, b.data_ptr(), plan.a_layout,
                                   a.data_ptr(), plan.b_layout, &beta, out.data_ptr(), plan.c_layout,
                                   out.data_ptr(), plan.c_layout, &plan.algo, ctx.workspace(),
                                   ctx.workspace_bytes(), ctx.stream()));
}

}  // namespace coat::cuda
