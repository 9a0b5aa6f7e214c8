// cuda FP8 GEMM on cuBLASLt, with plans cached in the context's MatmulPlanCache.
//
// Row-major to column-major as in gemm.cpp: out[M,N] = A[M,K] B[N,K]^T is computed as
// out^T = B A^T in column-major terms. cuBLASLt's A is our b (row-major [N,K] = column-major [K,N], ld K,
// used transposed), its B is our a (row-major [M,K] = column-major [K,M], ld K, not transposed), m = N,
// n = M: the "TN" form that cuBLASLt's FP8 kernels require. The scale of cuBLASLt's A is therefore b's and
// the scale of its B is a's; the allowed format pairs are symmetric apart from e5m2 x e5m2, which is refused.
#include "coat/backend/cuda/gemm_fp8.h"
#include "coat/backend/dense_operands.h"

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/cuda_context.h"
#include "coat/core/error.h"

namespace coat::cuda {

namespace {

constexpr const char* kOp = "matmul_fp8";
constexpr int64_t kFp8Multiple = 16;
constexpr uint32_t kFp8Alignment = 16;  // cuBLASLt FP8: A, B, C/D addresses 16-byte aligned

cudaDataType_t fp8_type(DType t, const char* operand) {
  switch (t) {
    case DType::E4M3:
      return CUDA_R_8F_E4M3;
    case DType::E5M2:
      return CUDA_R_8F_E5M2;
    default:
      break;
  }
  throw InvalidArgument(::coat::detail::concat("[", kOp, "] operand ", operand, ": codes have dtype ",
                                               dtype_name(t), ", expected e4m3 or e5m2"));
}

/// Largest power of two (<= 256) dividing the address.
uint32_t alignment_of(const void* ptr) {
  const auto address = reinterpret_cast<uintptr_t>(ptr);
  uint32_t align = 256;
  while (align > 1 && (address % align) != 0) align /= 2;
  return align;
}

void set_scale_pointer(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const void* ptr) {
  COAT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attr, &ptr, sizeof(ptr)));
}

}  // namespace

void matmul_fp8(const Tensor& a_codes, const Tensor& a_scale_inv, const Tensor& b_codes,
                const Tensor& b_scale_inv, Tensor& out, bool accumulate, bool fast_accum) {
  COAT_ARG_CHECK(a_codes.defined() && b_codes.defined() && out.defined() && a_scale_inv.defined() &&
                     b_scale_inv.defined(),
                 kOp, "undefined tensor argument");
  COAT_ARG_CHECK(out.device().is_cuda(), kOp, "cuda backend given out on ", out.device().str());
  COAT_ARG_CHECK(a_codes.context() == out.context() && b_codes.context() == out.context() &&
                     a_scale_inv.context() == out.context() && b_scale_inv.context() == out.context(),
                 kOp, "codes, scales and out must belong to the same CudaContext, got a on ",
                 a_codes.device().str(), ", b on ", b_codes.device().str(), ", out on ", out.device().str());
  COAT_ARG_CHECK(a_codes.dim() == 2 && b_codes.dim() == 2 && out.dim() == 2, kOp,
                 "a, b and out must be 2-D, got shapes ", shape_str(a_codes.shape()), ", ",
                 shape_str(b_codes.shape()), " and ", shape_str(out.shape()));
  COAT_ARG_CHECK(is_dense(a_codes) && is_dense(b_codes) && is_dense(out), kOp,
                 "a, b and out must be contiguous");
  const int64_t m = a_codes.size(0), k = a_codes.size(1), n = b_codes.size(0);
  COAT_ARG_CHECK(b_codes.size(1) == k, kOp, "shapes of a ", shape_str(a_codes.shape()), " [M,K] and b ",
                 shape_str(b_codes.shape()), " [N,K] do not match");
  COAT_ARG_CHECK(out.size(0) == m && out.size(1) == n, kOp, "out has shape ", shape_str(out.shape()),
                 ", expected ", shape_str({m, n}));
  COAT_ARG_CHECK(k % kFp8Multiple == 0 && n % kFp8Multiple == 0, kOp, "K = ", k, " and N = ", n,
                 " must be multiples of ", kFp8Multiple, " for cuBLASLt FP8");
  COAT_ARG_CHECK(a_scale_inv.dtype() == DType::F32 && a_scale_inv.numel() == 1 &&
                     b_scale_inv.dtype() == DType::F32 && b_scale_inv.numel() == 1,
                 kOp, "scales must be one-element f32 tensors");
  const cudaDataType_t a_type = fp8_type(a_codes.dtype(), "a");
  const cudaDataType_t b_type = fp8_type(b_codes.dtype(), "b");
  COAT_ARG_CHECK(!(a_type == CUDA_R_8F_E5M2 && b_type == CUDA_R_8F_E5M2), kOp,
                 "operands a and b are both e5m2: cuBLASLt has no e5m2 x e5m2 GEMM");
  COAT_ARG_CHECK(out.dtype() == DType::BF16 || out.dtype() == DType::F32, kOp, "output dtype ",
                 dtype_name(out.dtype()), " not supported; expected bf16 or f32");
  COAT_ARG_CHECK(!ranges_overlap(out, a_codes) && !ranges_overlap(out, b_codes), kOp,
                 "out must not overlap a or b");

  auto& ctx = static_cast<CudaContext&>(*out.context());
  if (m == 0 || n == 0) return;
  if (k == 0) {  // an empty sum: out = 0, or unchanged when accumulating
    if (!accumulate) COAT_CUDA_CHECK(cudaMemsetAsync(out.data_ptr(), 0, out.nbytes(), ctx.stream()));
    return;
  }
  const DeviceProperties& props = ctx.properties();
  COAT_CHECK(props.compute_capability() >= 89, NotImplemented, "[", kOp, "] cuda: FP8 GEMMs need compute "
             "capability 8.9 or newer (Ada, Hopper); device ", props.device, " has ",
             props.compute_capability_major, ".", props.compute_capability_minor);
  const uint32_t align_a = alignment_of(b_codes.data_ptr());  // cuBLASLt's A is our b
  const uint32_t align_b = alignment_of(a_codes.data_ptr());
  const uint32_t align_c = alignment_of(out.data_ptr());
  COAT_ARG_CHECK(align_a >= kFp8Alignment && align_b >= kFp8Alignment && align_c >= kFp8Alignment, kOp,
                 "cuBLASLt FP8 needs 16-byte aligned addresses; a is ", align_b, "-byte, b ", align_a,
                 "-byte and out ", align_c, "-byte aligned (a view at an offset?)");

  MatmulPlanKey key;
  key.m = static_cast<uint64_t>(n);
  key.n = static_cast<uint64_t>(m);
  key.k = static_cast<uint64_t>(k);
  key.trans_a = CUBLAS_OP_T;
  key.trans_b = CUBLAS_OP_N;
  key.lda = k;
  key.ldb = k;
  key.ldc = n;
  key.a_type = b_type;
  key.b_type = a_type;
  key.c_type = out.dtype() == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F;  // C and D: bf16 or f32
  key.compute_type = CUBLAS_COMPUTE_32F;
  key.scale_type = CUDA_R_32F;
  key.beta_zero = !accumulate;
  key.fast_accum = fast_accum;
  key.align_a = align_a;
  key.align_b = align_b;
  key.align_c = align_c;

  const MatmulPlan& plan = ctx.matmul_plans().get(ctx.cublaslt(), key, ctx.workspace_bytes());
  // Device pointers to the dequantisation factors: the GPU reads them when the kernel runs, so a scale
  // written earlier on the stream is the one used, with no host synchronisation. The cached descriptor
  // keeps the pointers of the last call; every call sets its own before cublasLtMatmul reads them.
  set_scale_pointer(plan.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, b_scale_inv.data_ptr());
  set_scale_pointer(plan.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, a_scale_inv.data_ptr());
  const float alpha = 1.0f;
  const float beta = accumulate ? 1.0f : 0.0f;
  COAT_CUBLAS_CHECK(cublasLtMatmul(ctx.cublaslt(), plan.desc, &alpha, b_codes.data_ptr(), plan.a_layout,
                                   a_codes.data_ptr(), plan.b_layout, &beta, out.data_ptr(), plan.c_layout,
                                   out.data_ptr(), plan.c_layout, &plan.algo, ctx.workspace(),
                                   ctx.workspace_bytes(), ctx.stream()));
}

}  // namespace coat::cuda
