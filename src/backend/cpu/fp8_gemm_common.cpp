// What the cpu FP8 GEMM references share: operand checks, the exact decode and the double product.
#include "coat/backend/cpu/fp8_gemm_common.h"

#include <cstdint>
#include <vector>

#include "coat/backend/element_access.h"
#include "coat/core/error.h"

namespace coat::cpu::fp8gemm {

void check_operands(const Tensor& a_codes, const Tensor& a_scale_inv, const Tensor& b_codes,
                    const Tensor& b_scale_inv, const Tensor& out, const char* op) {
  COAT_ARG_CHECK(a_codes.defined() && b_codes.defined() && out.defined() && a_scale_inv.defined() &&
                     b_scale_inv.defined(),
                 op, "undefined tensor argument");
  COAT_ARG_CHECK(a_codes.device().is_cpu() && b_codes.device().is_cpu() && out.device().is_cpu() &&
                     a_scale_inv.device().is_cpu() && b_scale_inv.device().is_cpu(),
                 op, "cpu backend given tensors on ", a_codes.device().str(), ", ", b_codes.device().str(),
                 " and ", out.device().str());
  COAT_ARG_CHECK(is_fp8(a_codes.dtype()) && is_fp8(b_codes.dtype()), op, "codes must be FP8, got ",
                 dtype_name(a_codes.dtype()), " and ", dtype_name(b_codes.dtype()));
}

Dims check_shapes(const Tensor& a_codes, const Tensor& b_codes, const Tensor& out, const char* op) {
  COAT_ARG_CHECK(a_codes.dim() == 2 && b_codes.dim() == 2 && out.dim() == 2, op, "a, b and out must be 2-D");
  const Dims d{a_codes.size(0), a_codes.size(1), b_codes.size(0)};
  COAT_ARG_CHECK(b_codes.size(1) == d.k && out.size(0) == d.m && out.size(1) == d.n, op, "shapes a ",
                 shape_str(a_codes.shape()), ", b ", shape_str(b_codes.shape()), ", out ",
                 shape_str(out.shape()), " do not form [M,K] x [N,K]^T -> [M,N]");
  return d;
}

std::vector<double> decode(const Tensor& codes) {
  std::vector<double> out(static_cast<size_t>(codes.numel()));
  const void* base = codes.data_ptr();
  for (int64_t i = 0; i < codes.numel(); ++i) out[static_cast<size_t>(i)] = load_as_double(base, i, codes.dtype());
  return out;
}

void store_product(const std::vector<double>& a, const std::vector<double>& b, Dims dims, double scale, Tensor& out,
                   bool accumulate) {
  void* o = out.data_ptr();
  const DType od = out.dtype();
  for (int64_t i = 0; i < dims.m; ++i) {
    const double* ar = a.data() + i * dims.k;
    for (int64_t j = 0; j < dims.n; ++j) {
      const double* br = b.data() + j * dims.k;
      double sum = 0.0;
      for (int64_t p = 0; p < dims.k; ++p) sum += ar[p] * br[p];
      const int64_t idx = i * dims.n + j;
      const double c = accumulate ? load_as_double(o, idx, od) : 0.0;
      store_from_double(o, idx, od, c + scale * sum);
    }
  }
}

}  // namespace coat::cpu::fp8gemm
