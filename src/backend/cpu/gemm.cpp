// cpu GEMM on OpenBLAS; 16-bit floats are widened to F32, multiplied by sgemm and rounded back once.
#include "coat/backend/cpu/gemm.h"
#include "coat/backend/dense_operands.h"

#include <cblas.h>

#include <climits>
#include <cstdint>
#include <vector>

#include "coat/core/error.h"
#include "coat/core/float_formats.h"

namespace coat::cpu {

namespace {

constexpr const char* kOp = "matmul";

struct GemmDims {
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
};

GemmDims check_arguments(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b,
                         const Tensor& out) {
  COAT_ARG_CHECK(a.defined() && b.defined() && out.defined(), kOp, "undefined tensor argument");
  COAT_ARG_CHECK(a.dim() == 2 && b.dim() == 2 && out.dim() == 2, kOp, "a, b and out must be 2-D, got shapes ",
                 shape_str(a.shape()), ", ", shape_str(b.shape()), " and ", shape_str(out.shape()));
  COAT_ARG_CHECK(is_dense(a) && is_dense(b) && is_dense(out), kOp, "a, b and out must be contiguous (a ",
                 is_dense(a) ? "is" : "is not", ", b ", is_dense(b) ? "is" : "is not", ", out ",
                 is_dense(out) ? "is" : "is not", ")");
  COAT_ARG_CHECK(a.device().is_cpu() && b.device().is_cpu() && out.device().is_cpu(), kOp,
                 "cpu backend given tensors on ", a.device().str(), ", ", b.device().str(), " and ",
                 out.device().str());
  GemmDims d;
  d.m = transpose_a ? a.size(1) : a.size(0);
  d.k = transpose_a ? a.size(0) : a.size(1);
  const int64_t k_b = transpose_b ? b.size(1) : b.size(0);
  d.n = transpose_b ? b.size(0) : b.size(1);
  COAT_ARG_CHECK(d.k == k_b, kOp, "shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()),
                 " do not match (transpose_a=", transpose_a, ", transpose_b=", transpose_b,
                 "): inner dimensions ", d.k, " and ", k_b);
  COAT_ARG_CHECK(out.size(0) == d.m && out.size(1) == d.n, kOp, "out has shape ", shape_str(out.shape()),
                 ", expected ", shape_str({d.m, d.n}), " for a ", shape_str(a.shape()), " and b ",
                 shape_str(b.shape()), " (transpose_a=", transpose_a, ", transpose_b=", transpose_b, ")");
  COAT_ARG_CHECK(d.m <= INT_MAX && d.n <= INT_MAX && d.k <= INT_MAX, kOp, "dimensions M=", d.m, " N=", d.n,
                 " K=", d.k, " exceed the BLAS int range");
  COAT_ARG_CHECK(!ranges_overlap(out, a) && !ranges_overlap(out, b), kOp, "out must not overlap a or b");
  return d;
}

void check_dtypes(const Tensor& a, const Tensor& b, const Tensor& out) {
  COAT_ARG_CHECK(a.dtype() == b.dtype(), kOp, "a and b must have the same dtype, got ", dtype_name(a.dtype()),
                 " and ", dtype_name(b.dtype()));
  const DType in = a.dtype();
  const DType o = out.dtype();
  const bool ok = (in == DType::F32 && o == DType::F32) || (in == DType::F64 && o == DType::F64) ||
                  ((in == DType::BF16 || in == DType::F16) && (o == in || o == DType::F32));
  COAT_CHECK(ok, NotImplemented, "[", kOp, "] cpu: no kernel for inputs ", dtype_name(in), " and out ",
             dtype_name(o), " (supported: f32->f32, f64->f64, bf16->bf16/f32, f16->f16/f32)");
}

std::vector<float> widen(const Tensor& t) {
  const int64_t n = t.numel();
  std::vector<float> out(static_cast<size_t>(n));
  const auto* src = static_cast<const uint16_t*>(t.data_ptr());
  if (t.dtype() == DType::BF16) {
    for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_float(src[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = f16_to_float(src[i]);
  }
  return out;
}

void narrow(const std::vector<float>& values, Tensor& t) {
  const int64_t n = t.numel();
  auto* dst = static_cast<uint16_t*>(t.data_ptr());
  if (t.dtype() == DType::BF16) {
    for (int64_t i = 0; i < n; ++i) dst[i] = float_to_bf16(values[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = float_to_f16(values[i]);
  }
}

// out = beta * out for the K == 0 case (an empty sum), which BLAS rejects through its ld checks.
void scale_out(Tensor& out, float beta) {
  const int64_t n = out.numel();
  switch (out.dtype()) {
    case DType::F32: {
      auto* p = out.data<float>();
      for (int64_t i = 0; i < n; ++i) p[i] = beta == 0.0f ? 0.0f : beta * p[i];
      return;
    }
    case DType::F64: {
      auto* p = out.data<double>();
      for (int64_t i = 0; i < n; ++i) p[i] = beta == 0.0f ? 0.0 : static_cast<double>(beta) * p[i];
      return;
    }
    default: {
      std::vector<float> values =
          beta == 0.0f ? std::vector<float>(static_cast<size_t>(n), 0.0f) : widen(out);
      if (beta != 0.0f) {
        for (float& v : values) v *= beta;
      }
      narrow(values, out);
      return;
    }
  }
}

}  // namespace

void matmul(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b, Tensor& out, float alpha,
            float beta) {
  const GemmDims d = check_arguments(a, b, transpose_a, transpose_b, out);
  check_dtypes(a, b, out);
  if (d.m == 0 || d.n == 0) return;
  if (d.k == 0) {
    scale_out(out, beta);
    return;
  }
  const int m = static_cast<int>(d.m);
  const int n = static_cast<int>(d.n);
  const int k = static_cast<int>(d.k);
  // Row-major leading dimensions: the number of columns of each matrix as stored.
  const int lda = transpose_a ? m : k;
  const int ldb = transpose_b ? k : n;
  const int ldc = n;
  const CBLAS_TRANSPOSE ta = transpose_a ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = transpose_b ? CblasTrans : CblasNoTrans;

  switch (a.dtype()) {
    case DType::F32:
      cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a.data<float>(), lda, b.data<float>(), ldb, beta,
                  out.data<float>(), ldc);
      return;
    case DType::F64:
      cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, static_cast<double>(alpha), a.data<double>(), lda,
                  b.data<double>(), ldb, static_cast<double>(beta), out.data<double>(), ldc);
      return;
    default: {  // BF16 / F16: widen (exact), sgemm with FP32 accumulation, round once to out's type
      const std::vector<float> a32 = widen(a);
      const std::vector<float> b32 = widen(b);
      if (out.dtype() == DType::F32) {
        cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a32.data(), lda, b32.data(), ldb, beta,
                    out.data<float>(), ldc);
        return;
      }
      // beta == 0: out may hold garbage (even NaN); start from zeros instead of reading it.
      std::vector<float> c32 =
          beta == 0.0f ? std::vector<float>(static_cast<size_t>(out.numel()), 0.0f) : widen(out);
      cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a32.data(), lda, b32.data(), ldb, beta, c32.data(),
                  ldc);
      narrow(c32, out);
      return;
    }
  }
}

}  // namespace coat::cpu
