// cpu 128-block-scaled FP8 GEMM, the reference: exact dequantization to double, double products and sums, one
// final rounding.
#include "coat/backend/cpu/gemm_fp8_block.h"

#include <cstdint>
#include <vector>

#include "coat/backend/block_scale_layout.h"
#include "coat/backend/cpu/fp8_gemm_common.h"
#include "coat/backend/dense_operands.h"
#include "coat/core/error.h"

namespace coat::cpu {

namespace {

constexpr const char* kOp = "matmul_fp8_block";
using fp8block::kBlock;

/// codes [rows, K] dequantized exactly to double: decode(code) * double(scale_inv of its block), the scale
/// found by scale_at(row, kblock).
template <typename ScaleAt>
std::vector<double> dequantize_exact(const Tensor& codes, ScaleAt scale_at) {
  const int64_t rows = codes.size(0), k = codes.size(1);
  std::vector<double> out = fp8gemm::decode(codes);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < k; ++c) out[static_cast<size_t>(r * k + c)] *= static_cast<double>(scale_at(r, c / kBlock));
  }
  return out;
}

}  // namespace

void matmul_fp8_block(const Tensor& a_codes, const Tensor& a_scale_inv, const Tensor& b_codes,
                      const Tensor& b_scale_inv, int64_t b_block_rows, Tensor& out, bool accumulate) {
  fp8gemm::check_operands(a_codes, a_scale_inv, b_codes, b_scale_inv, out, kOp);
  check_fp8_gemm_output_dtype(out, kOp);
  const fp8gemm::Dims dims = fp8gemm::check_shapes(a_codes, b_codes, out, kOp);
  fp8block::check_block_scales(a_scale_inv, fp8block::scale_shape_1x128(a_codes.shape(), kOp), kOp,
                               Device::cpu());
  fp8block::check_block_scales(b_scale_inv, fp8block::scale_shape_blocked(b_codes.shape(), b_block_rows, kOp), kOp,
                               Device::cpu());
  COAT_ARG_CHECK(is_dense(a_codes) && is_dense(b_codes) && is_dense(out), kOp, "a, b and out must be contiguous");
  COAT_ARG_CHECK(!ranges_overlap(out, a_codes) && !ranges_overlap(out, b_codes) &&
                     !ranges_overlap(out, a_scale_inv) && !ranges_overlap(out, b_scale_inv),
                 kOp, "out must not overlap a or b");

  const float* sa = a_scale_inv.data<const float>();
  const float* sb = b_scale_inv.data<const float>();
  const int64_t lda = fp8block::scale_ld_1x128(dims.m);
  const std::vector<double> a = dequantize_exact(
      a_codes, [&](int64_t r, int64_t kb) { return sa[fp8block::scale_index_1x128(r, kb, lda)]; });
  std::vector<double> b;
  if (b_block_rows == 1) {
    const int64_t ldb = fp8block::scale_ld_1x128(dims.n);
    b = dequantize_exact(b_codes, [&](int64_t r, int64_t kb) { return sb[fp8block::scale_index_1x128(r, kb, ldb)]; });
  } else {
    const int64_t ldb = fp8block::scale_ld_128x128(dims.k);
    b = dequantize_exact(
        b_codes, [&](int64_t r, int64_t kb) { return sb[fp8block::scale_index_128x128(r / kBlock, kb, ldb)]; });
  }
  // The dequantized operands carry the scales: the product is taken with scale 1.
  fp8gemm::store_product(a, b, dims, 1.0, out, accumulate);
}

}  // namespace coat::cpu
