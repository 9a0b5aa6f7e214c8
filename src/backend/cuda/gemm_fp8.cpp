// cuda FP8 GEMM on cuBLASLt, with plans cached in the context's MatmulPlanCache.
//
// Row-major to column-major as in gemm.cpp: out[M,N] = A[M,K] B[N,K]^T is computed as
// out^T = B A^T in column-major terms. cuBLASLt's A is our b (row-major [N,K] = column-major [K,N], ld K,
// used transposed), its B is our a (row-major [M,K] = column-major [K,M], ld K, not transposed), m = N,
// n = M: the "TN" form that cuBLASLt's FP8 kernels require. The scale of cuBLASLt's A is therefore b's and
// the scale of its B is a's; the allowed format pairs are symmetric apart from e5m2 x e5m2, which is refused.
#include "coat/backend/cuda/gemm_fp8.h"
#include "coat/backend/dense_operands.h"

#include <cstdint>

#include "coat/backend/cuda/cuda_context.h"
#include "coat/backend/cuda/fp8_gemm_common.h"
#include "coat/core/error.h"

namespace coat::cuda {

namespace {

constexpr const char* kOp = "matmul_fp8";
constexpr int64_t kFp8Multiple = 16;

}  // namespace

void matmul_fp8(const Tensor& a_codes, const Tensor& a_scale_inv, const Tensor& b_codes,
                const Tensor& b_scale_inv, Tensor& out, bool accumulate, bool fast_accum) {
  fp8gemm::check_operands(a_codes, a_scale_inv, b_codes, b_scale_inv, out, kOp);
  const int64_t m = a_codes.size(0), k = a_codes.size(1), n = b_codes.size(0);
  COAT_ARG_CHECK(k % kFp8Multiple == 0 && n % kFp8Multiple == 0, kOp, "K = ", k, " and N = ", n,
                 " must be multiples of ", kFp8Multiple, " for cuBLASLt FP8");
  COAT_ARG_CHECK(a_scale_inv.dtype() == DType::F32 && a_scale_inv.numel() == 1 &&
                     b_scale_inv.dtype() == DType::F32 && b_scale_inv.numel() == 1,
                 kOp, "scales must be one-element f32 tensors");
  const fp8gemm::OperandTypes types = fp8gemm::operand_types(a_codes, b_codes, kOp);
  check_fp8_gemm_output_dtype(out, kOp);
  COAT_ARG_CHECK(!ranges_overlap(out, a_codes) && !ranges_overlap(out, b_codes), kOp,
                 "out must not overlap a or b");

  auto& ctx = static_cast<CudaContext&>(*out.context());
  if (fp8gemm::finish_if_empty(ctx, out, m, n, k, accumulate)) return;
  const DeviceProperties& props = ctx.properties();
  COAT_CHECK(props.compute_capability() >= 89, NotImplemented, "[", kOp, "] cuda: FP8 GEMMs need compute "
             "capability 8.9 or newer (Ada, Hopper); device ", props.device, " has ",
             props.compute_capability_major, ".", props.compute_capability_minor);
  const fp8gemm::Alignments align = fp8gemm::checked_alignments(a_codes, b_codes, out, kOp);

  const MatmulPlanKey key = fp8gemm::tn_plan_key(m, n, k, types, out.dtype(), accumulate, fast_accum, align);
  const MatmulPlan& plan = ctx.matmul_plans().get(ctx.cublaslt(), key, ctx.workspace_bytes());
  // Device pointers to the dequantisation factors: the GPU reads them when the kernel runs, so a scale
  // written earlier on the stream is the one used, with no host synchronisation.
  fp8gemm::run(ctx, plan, a_codes, a_scale_inv, b_codes, b_scale_inv, out, accumulate);
}

}  // namespace coat::cuda
