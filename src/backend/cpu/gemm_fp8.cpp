// cpu FP8 GEMM, the reference: exact decode to double, double products and sums, one final rounding.
#include "coat/backend/cpu/gemm_fp8.h"
#include "coat/backend/dense_operands.h"

#include <cstdint>
#include <vector>

#include "coat/backend/element_access.h"
#include "coat/core/error.h"

namespace coat::cpu {

namespace {

constexpr const char* kOp = "matmul_fp8";

// Every code of an FP8 tensor decoded (exactly) to double.
std::vector<double> decode(const Tensor& codes) {
  std::vector<double> out(static_cast<size_t>(codes.numel()));
  const void* base = codes.data_ptr();
  for (int64_t i = 0; i < codes.numel(); ++i) out[static_cast<size_t>(i)] = load_as_double(base, i, codes.dtype());
  return out;
}

}  // namespace

void matmul_fp8(const Tensor& a_codes, const Tensor& a_scale_inv, const Tensor& b_codes,
                const Tensor& b_scale_inv, Tensor& out, bool accumulate) {
  COAT_ARG_CHECK(a_codes.defined() && b_codes.defined() && out.defined() && a_scale_inv.defined() &&
                     b_scale_inv.defined(),
                 kOp, "undefined tensor argument");
  COAT_ARG_CHECK(a_codes.device().is_cpu() && b_codes.device().is_cpu() && out.device().is_cpu() &&
                     a_scale_inv.device().is_cpu() && b_scale_inv.device().is_cpu(),
                 kOp, "cpu backend given tensors on ", a_codes.device().str(), ", ", b_codes.device().str(),
                 " and ", out.device().str());
  COAT_ARG_CHECK(is_fp8(a_codes.dtype()) && is_fp8(b_codes.dtype()), kOp, "codes must be FP8, got ",
                 dtype_name(a_codes.dtype()), " and ", dtype_name(b_codes.dtype()));
  COAT_ARG_CHECK(a_scale_inv.dtype() == DType::F32 && a_scale_inv.numel() == 1 &&
                     b_scale_inv.dtype() == DType::F32 && b_scale_inv.numel() == 1,
                 kOp, "scales must be one-element f32 tensors");
  COAT_ARG_CHECK(out.dtype() == DType::BF16 || out.dtype() == DType::F32, kOp, "output dtype ",
                 dtype_name(out.dtype()), " not supported; expected bf16 or f32");
  COAT_ARG_CHECK(a_codes.dim() == 2 && b_codes.dim() == 2 && out.dim() == 2, kOp, "a, b and out must be 2-D");
  const int64_t m = a_codes.size(0), k = a_codes.size(1), n = b_codes.size(0);
  COAT_ARG_CHECK(b_codes.size(1) == k && out.size(0) == m && out.size(1) == n, kOp, "shapes a ",
                 shape_str(a_codes.shape()), ", b ", shape_str(b_codes.shape()), ", out ",
                 shape_str(out.shape()), " do not form [M,K] x [N,K]^T -> [M,N]");
  COAT_ARG_CHECK(is_dense(a_codes) && is_dense(b_codes) && is_dense(out), kOp, "a, b and out must be contiguous");
  COAT_ARG_CHECK(!ranges_overlap(out, a_codes) && !ranges_overlap(out, b_codes), kOp,
                 "out must not overlap a or b");

  // Two floats multiply exactly in double (24 + 24 <= 53 significant bits).
  const double scale = static_cast<double>(a_scale_inv.data<float>()[0]) *
                       static_cast<double>(b_scale_inv.data<float>()[0]);
  const std::vector<double> a = decode(a_codes);
  const std::vector<double> b = decode(b_codes);
  void* o = out.data_ptr();
  const DType od = out.dtype();
  for (int64_t i = 0; i < m; ++i) {
    const double* ar = a.data() + i * k;
    for (int64_t j = 0; j < n; ++j) {
      const double* br = b.data() + j * k;
      double sum = 0.0;
      for (int64_t p = 0; p < k; ++p) sum += ar[p] * br[p];  // products of two FP8 values are exact
      const int64_t idx = i * n + j;
      const double c = accumulate ? load_as_double(o, idx, od) : 0.0;
      store_from_double(o, idx, od, c + scale * sum);
    }
  }
}

}  // namespace coat::cpu
