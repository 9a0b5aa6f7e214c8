// cuda 128-block-scaled FP8 GEMM on cuBLASLt, with plans cached in the context's MatmulPlanCache.
//
// Row-major to column-major as in gemm_fp8.cpp: out[M,N] = A[M,K] B[N,K]^T is computed as out^T = B A^T in
// column-major terms. cuBLASLt's A is our b (the weights: row-major [N,K] = column-major K x N, ld K, used
// transposed), its B is our a (the activations: row-major [M,K] = column-major K x M, ld K), m = N, n = M: the
// "TN" form of cuBLASLt's FP8 kernels. So the scale modes swap with the operands:
//  - cuBLASLt A (our b, 128x128 blocks): CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, scales of the
//    128x128 blocks of the K x N matrix with the K blocks contiguous: [N/128][round_up(K/128, 4)].
//  - cuBLASLt B (our a, 1x128 groups): CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F, one scale per 128 elements of
//    the inner (K) dimension for each of the M columns, the M columns contiguous: [K/128][M].
//  - A 1x128-quantized b (a weight gradient dW = dY^T X, both operands grouped along the tokens, K): cuBLASLt A
//    with VEC128_32F too, its scales [K/128][N] likewise. cuBLASLt takes VEC128 x VEC128 ("1D x 1D") beside
//    VEC128 x BLK128x128 ("1D x 2D"), not BLK128x128 x BLK128x128: TransformerEngine's blockwise FP8 GEMM
//    (common/gemm/cublaslt_gemm.cu) passes exactly these pairs to cuBLASLt and refuses "2D by 2D".
// These are the layouts ops::quantize_128x128 / quantize_1x128 write (block_scale_layout.h), so the scale
// tensors go to cuBLASLt as they are.
#include "coat/backend/cuda/gemm_fp8_block.h"

#include <cublasLt.h>

#include <cstdint>

#include "coat/backend/block_scale_layout.h"
#include "coat/backend/cuda/cuda_context.h"
#include "coat/backend/cuda/fp8_gemm_common.h"
#include "coat/backend/dense_operands.h"
#include "coat/core/error.h"

namespace coat::cuda {

namespace {

constexpr const char* kOp = "matmul_fp8_block";
/// cuBLASLt version that introduced the VEC128_32F and BLK128x128_32F scale modes (12.9.0).
constexpr int kMinCublasVersion = 120900;

void check_arguments(const Tensor& a_codes, const Tensor& a_scale_inv, const Tensor& b_codes,
                     const Tensor& b_scale_inv, int64_t b_block_rows, const Tensor& out) {
  fp8gemm::check_operands(a_codes, a_scale_inv, b_codes, b_scale_inv, out, kOp);
  const int64_t m = a_codes.size(0);
  COAT_ARG_CHECK(m % fp8block::kScaleLdMultiple == 0, kOp, "M = ", m, " must be a multiple of ",
                 fp8block::kScaleLdMultiple, " (the 1x128 scale layout's leading dimension is then M)");
  if (b_block_rows == 1) {
    const int64_t n = b_codes.size(0);
    COAT_ARG_CHECK(n % fp8block::kScaleLdMultiple == 0, kOp, "N = ", n, " must be a multiple of ",
                   fp8block::kScaleLdMultiple, " for a 1x128-quantized b (its scale layout's leading dimension is "
                   "then N)");
  }
  // K (and N for a 128x128-quantized b) multiples of 128, the scale shapes.
  fp8block::check_block_scales(a_scale_inv, fp8block::scale_shape_1x128(a_codes.shape(), kOp), kOp,
                               out.device());
  fp8block::check_block_scales(b_scale_inv, fp8block::scale_shape_blocked(b_codes.shape(), b_block_rows, kOp), kOp,
                               out.device());
  check_fp8_gemm_output_dtype(out, kOp);
  COAT_ARG_CHECK(!ranges_overlap(out, a_codes) && !ranges_overlap(out, b_codes) &&
                     !ranges_overlap(out, a_scale_inv) && !ranges_overlap(out, b_scale_inv),
                 kOp, "out must not overlap a or b");
}

}  // namespace

void matmul_fp8_block(const Tensor& a_codes, const Tensor& a_scale_inv, const Tensor& b_codes,
                      const Tensor& b_scale_inv, int64_t b_block_rows, Tensor& out, bool accumulate) {
  check_arguments(a_codes, a_scale_inv, b_codes, b_scale_inv, b_block_rows, out);
  const fp8gemm::OperandTypes types = fp8gemm::operand_types(a_codes, b_codes, kOp);
  const int64_t m = a_codes.size(0), k = a_codes.size(1), n = b_codes.size(0);

  auto& ctx = static_cast<CudaContext&>(*out.context());
  if (fp8gemm::finish_if_empty(ctx, out, m, n, k, accumulate)) return;
  COAT_CHECK(CUBLAS_VERSION >= kMinCublasVersion, NotImplemented, "[", kOp, "] cuda: cuBLASLt's 128-block scale "
             "modes need cuBLAS 12.9 or newer; this build has ", CUBLAS_VERSION);
  const DeviceProperties& props = ctx.properties();
  COAT_CHECK(props.compute_capability_major == 9, NotImplemented, "[", kOp, "] cuda: cuBLASLt runs the "
             "VEC128_32F / BLK128x128_32F scale modes on Hopper (compute capability 9.0) only; device ",
             props.device, " has ", props.compute_capability_major, ".", props.compute_capability_minor,
             ". HINT: use the per-tensor FP8 GEMM (ops::matmul_fp8) there");
  const fp8gemm::Alignments align = fp8gemm::checked_alignments(a_codes, b_codes, out, kOp);
  COAT_ARG_CHECK(fp8gemm::alignment_of(a_scale_inv.data_ptr()) >= fp8gemm::kAlignment &&
                     fp8gemm::alignment_of(b_scale_inv.data_ptr()) >= fp8gemm::kAlignment,
                 kOp, "the scale tensors must be 16-byte aligned (a view at an offset?)");

#if CUBLAS_VERSION >= 120900
  const MatmulPlanKey key = fp8gemm::block_plan_key(m, n, k, types, out.dtype(), accumulate, b_block_rows, align);
  const MatmulPlan& plan = ctx.matmul_plans().get(ctx.cublaslt(), key, ctx.workspace_bytes(),
                                                  b_scale_inv.data_ptr(), a_scale_inv.data_ptr());
  // Device pointers to the dequantisation factors, read by the GPU when the kernel runs (no host
  // synchronisation).
  fp8gemm::run(ctx, plan, a_codes, a_scale_inv, b_codes, b_scale_inv, out, accumulate);
#else
  (void)types;
  (void)align;
#endif
}

}  // namespace coat::cuda
