// What the cuda FP8 GEMMs share: operand checks, FP8 type mapping, alignments, the TN plan key and the launch.
#include "coat/backend/cuda/fp8_gemm_common.h"

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "coat/backend/cuda/check.h"
#include "coat/backend/dense_operands.h"
#include "coat/core/error.h"

namespace coat::cuda::fp8gemm {

namespace {

cudaDataType_t fp8_type(DType t, const char* op, const char* operand) {
  switch (t) {
    case DType::E4M3:
      return CUDA_R_8F_E4M3;
    case DType::E5M2:
      return CUDA_R_8F_E5M2;
    default:
      break;
  }
  throw InvalidArgument(::coat::detail::concat("[", op, "] operand ", operand, ": codes have dtype ",
                                               dtype_name(t), ", expected e4m3 or e5m2"));
}

void set_scale_pointer(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const void* ptr) {
  COAT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attr, &ptr, sizeof(ptr)));
}

}  // namespace

void check_operands(const Tensor& a_codes, const Tensor& a_scale_inv, const Tensor& b_codes,
                    const Tensor& b_scale_inv, const Tensor& out, const char* op) {
  COAT_ARG_CHECK(a_codes.defined() && b_codes.defined() && out.defined() && a_scale_inv.defined() &&
                     b_scale_inv.defined(),
                 op, "undefined tensor argument");
  COAT_ARG_CHECK(out.device().is_cuda(), op, "cuda backend given out on ", out.device().str());
  COAT_ARG_CHECK(a_codes.context() == out.context() && b_codes.context() == out.context() &&
                     a_scale_inv.context() == out.context() && b_scale_inv.context() == out.context(),
                 op, "codes, scales and out must belong to the same CudaContext, got a on ",
                 a_codes.device().str(), ", b on ", b_codes.device().str(), ", out on ", out.device().str());
  COAT_ARG_CHECK(a_codes.dim() == 2 && b_codes.dim() == 2 && out.dim() == 2, op,
                 "a, b and out must be 2-D, got shapes ", shape_str(a_codes.shape()), ", ",
                 shape_str(b_codes.shape()), " and ", shape_str(out.shape()));
  COAT_ARG_CHECK(is_dense(a_codes) && is_dense(b_codes) && is_dense(out), op,
                 "a, b and out must be contiguous");
  const int64_t m = a_codes.size(0), k = a_codes.size(1), n = b_codes.size(0);
  COAT_ARG_CHECK(b_codes.size(1) == k, op, "shapes of a ", shape_str(a_codes.shape()), " [M,K] and b ",
                 shape_str(b_codes.shape()), " [N,K] do not match");
  COAT_ARG_CHECK(out.size(0) == m && out.size(1) == n, op, "out has shape ", shape_str(out.shape()),
                 ", expected ", shape_str({m, n}));
}

OperandTypes operand_types(const Tensor& a_codes, const Tensor& b_codes, const char* op) {
  const OperandTypes types{fp8_type(a_codes.dtype(), op, "a"), fp8_type(b_codes.dtype(), op, "b")};
  COAT_ARG_CHECK(!(types.a == CUDA_R_8F_E5M2 && types.b == CUDA_R_8F_E5M2), op,
                 "operands a and b are both e5m2: cuBLASLt has no e5m2 x e5m2 GEMM");
  return types;
}

bool finish_if_empty(CudaContext& ctx, Tensor& out, int64_t m, int64_t n, int64_t k, bool accumulate) {
  if (m == 0 || n == 0) return true;
  if (k == 0) {  // an empty sum: out = 0, or unchanged when accumulating
    if (!accumulate) COAT_CUDA_CHECK(cudaMemsetAsync(out.data_ptr(), 0, out.nbytes(), ctx.stream()));
    return true;
  }
  return false;
}

uint32_t alignment_of(const void* ptr) {
  const auto address = reinterpret_cast<uintptr_t>(ptr);
  uint32_t align = 256;
  while (align > 1 && (address % align) != 0) align /= 2;
  return align;
}

Alignments checked_alignments(const Tensor& a_codes, const Tensor& b_codes, const Tensor& out, const char* op) {
  const Alignments align{alignment_of(b_codes.data_ptr()),  // cuBLASLt's A is our b
                         alignment_of(a_codes.data_ptr()), alignment_of(out.data_ptr())};
  COAT_ARG_CHECK(align.a >= kAlignment && align.b >= kAlignment && align.c >= kAlignment, op,
                 "cuBLASLt FP8 needs 16-byte aligned addresses; a is ", align.b, "-byte, b ", align.a,
                 "-byte and out ", align.c, "-byte aligned (a view at an offset?)");
  return align;
}

MatmulPlanKey tn_plan_key(int64_t m, int64_t n, int64_t k, OperandTypes types, DType out_dtype, bool accumulate,
                          bool fast_accum, Alignments align) {
  MatmulPlanKey key;
  key.m = static_cast<uint64_t>(n);
  key.n = static_cast<uint64_t>(m);
  key.k = static_cast<uint64_t>(k);
  key.trans_a = CUBLAS_OP_T;
  key.trans_b = CUBLAS_OP_N;
  key.lda = k;
  key.ldb = k;
  key.ldc = n;
  key.a_type = types.b;
  key.b_type = types.a;
  key.c_type = out_dtype == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F;  // C and D: bf16 or f32
  key.compute_type = CUBLAS_COMPUTE_32F;
  key.scale_type = CUDA_R_32F;
  key.beta_zero = !accumulate;
  key.fast_accum = fast_accum;
  key.align_a = align.a;
  key.align_b = align.b;
  key.align_c = align.c;
  return key;
}

MatmulPlanKey block_plan_key(int64_t m, int64_t n, int64_t k, OperandTypes types, DType out_dtype, bool accumulate,
                             int64_t b_block_rows, Alignments align) {
#if CUBLAS_VERSION >= 120900
  MatmulPlanKey key = tn_plan_key(m, n, k, types, out_dtype, accumulate, /*fast_accum=*/false, align);
  // cuBLASLt's A is our b: 128x128-quantized weights, or the 1x128-quantized operand of a weight gradient.
  key.a_scale_mode = b_block_rows == 1 ? CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F
                                       : CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
  key.b_scale_mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;  // our a, 1x128-quantized
  return key;
#else
  (void)m, (void)n, (void)k, (void)types, (void)out_dtype, (void)accumulate, (void)b_block_rows, (void)align;
  throw NotImplemented(::coat::detail::concat("[matmul_fp8_block] cuda: cuBLASLt's 128-block scale modes need "
                                              "cuBLAS 12.9 or newer; this build has ", CUBLAS_VERSION));
#endif
}

void run(CudaContext& ctx, const MatmulPlan& plan, const Tensor& a_codes, const Tensor& a_scale_inv,
         const Tensor& b_codes, const Tensor& b_scale_inv, Tensor& out, bool accumulate) {
  set_scale_pointer(plan.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, b_scale_inv.data_ptr());
  set_scale_pointer(plan.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, a_scale_inv.data_ptr());
  const float alpha = 1.0f;
  const float beta = accumulate ? 1.0f : 0.0f;
  COAT_CUBLAS_CHECK(cublasLtMatmul(ctx.cublaslt(), plan.desc, &alpha, b_codes.data_ptr(), plan.a_layout,
                                   a_codes.data_ptr(), plan.b_layout, &beta, out.data_ptr(), plan.c_layout,
                                   out.data_ptr(), plan.c_layout, &plan.algo, ctx.workspace(),
                                   ctx.workspace_bytes(), ctx.stream()));
}

}  // namespace coat::cuda::fp8gemm
