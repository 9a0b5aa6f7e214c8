// Matrix products: validation here, kernels in the backends (OpenBLAS, cuBLASLt).
#include "coat/ops/matmul.h"

#include "coat/backend/cpu/gemm.h"
#include "coat/ops/copy.h"
#include "coat/ops/dispatch.h"
#ifdef COAT_WITH_CUDA
#include "coat/backend/cuda/gemm.h"
#endif

namespace coat::ops {
namespace {

struct MatmulShape {
  int64_t m, n, k;
};

MatmulShape check_operands(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b) {
  COAT_ARG_CHECK(a.defined() && b.defined(), "matmul", "undefined operand");
  COAT_ARG_CHECK(a.dim() == 2 && b.dim() == 2, "matmul", "operands must be 2-D, got ", shape_str(a.shape()),
                 " and ", shape_str(b.shape()));
  COAT_ARG_CHECK(a.dtype() == b.dtype(), "matmul", "operand dtypes ", dtype_name(a.dtype()), " and ",
                 dtype_name(b.dtype()), " differ");
  COAT_ARG_CHECK(a.device() == b.device(), "matmul", "operands on ", a.device().str(), " and ",
                 b.device().str());
  const int64_t m = transpose_a ? a.size(1) : a.size(0);
  const int64_t k = transpose_a ? a.size(0) : a.size(1);
  const int64_t kb = transpose_b ? b.size(1) : b.size(0);
  const int64_t n = transpose_b ? b.size(0) : b.size(1);
  COAT_ARG_CHECK(k == kb, "matmul", "shapes ", shape_str(a.shape()), (transpose_a ? "^T" : ""), " and ",
                 shape_str(b.shape()), (transpose_b ? "^T" : ""), " do not match");
  return {m, n, k};
}

}  // namespace

void matmul_(const Tensor& a, const Tensor& b, Tensor& out, bool transpose_a, bool transpose_b, float alpha,
             float beta) {
  const MatmulShape s = check_operands(a, b, transpose_a, transpose_b);
  COAT_ARG_CHECK(out.defined() && out.shape() == Shape({s.m, s.n}), "matmul", "output shape ",
                 shape_str(out.shape()), " should be ", shape_str({s.m, s.n}));
  COAT_ARG_CHECK(out.is_contiguous(), "matmul", "output must be contiguous");
  COAT_ARG_CHECK(out.device() == a.device(), "matmul", "output on ", out.device().str(), ", operands on ",
                 a.device().str());
  const Tensor ca = contiguous(a), cb = contiguous(b);
  COAT_DISPATCH("matmul", a.device(), cpu::matmul(ca, cb, transpose_a, transpose_b, out, alpha, beta),
                cuda::matmul(ca, cb, transpose_a, transpose_b, out, alpha, beta));
}

Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b, std::optional<DType> out_dtype) {
  const MatmulShape s = check_operands(a, b, transpose_a, transpose_b);
  Tensor out = Tensor::empty(a.context(), {s.m, s.n}, out_dtype.value_or(a.dtype()));
  matmul_(a, b, out, transpose_a, transpose_b);
  return out;
}

}  // namespace coat::ops
