// cpu FP8 GEMM, the reference: exact decode to double, double products and sums, one final rounding.
#include "coat/backend/cpu/gemm_fp8.h"
#include "coat/backend/dense_operands.h"

#include <vector>

#include "coat/backend/cpu/fp8_gemm_common.h"
#include "coat/core/error.h"

namespace coat::cpu {

namespace {

constexpr const char* kOp = "matmul_fp8";

}  // namespace

void matmul_fp8(const Tensor& a_codes, const Tensor& a_scale_inv, const Tensor& b_codes,
                const Tensor& b_scale_inv, Tensor& out, bool accumulate) {
  fp8gemm::check_operands(a_codes, a_scale_inv, b_codes, b_scale_inv, out, kOp);
  COAT_ARG_CHECK(a_scale_inv.dtype() == DType::F32 && a_scale_inv.numel() == 1 &&
                     b_scale_inv.dtype() == DType::F32 && b_scale_inv.numel() == 1,
                 kOp, "scales must be one-element f32 tensors");
  check_fp8_gemm_output_dtype(out, kOp);
  const fp8gemm::Dims dims = fp8gemm::check_shapes(a_codes, b_codes, out, kOp);
  COAT_ARG_CHECK(is_dense(a_codes) && is_dense(b_codes) && is_dense(out), kOp, "a, b and out must be contiguous");
  COAT_ARG_CHECK(!ranges_overlap(out, a_codes) && !ranges_overlap(out, b_codes), kOp,
                 "out must not overlap a or b");

  // Two floats multiply exactly in double (24 + 24 <= 53 significant bits); so do two FP8 values.
  const double scale = static_cast<double>(a_scale_inv.data<float>()[0]) *
                       static_cast<double>(b_scale_inv.data<float>()[0]);
  fp8gemm::store_product(fp8gemm::decode(a_codes), fp8gemm::decode(b_codes), dims, scale, out, accumulate);
}

}  // namespace coat::cpu
