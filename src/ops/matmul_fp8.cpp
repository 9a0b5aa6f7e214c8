// FP8 matrix product: validation here (shared by both backends, so the CPU reference keeps cuBLASLt's
// contract), kernels in the backends.
#include "coat/ops/matmul_fp8.h"

#include "coat/backend/cpu/gemm_fp8.h"
#include "coat/ops/dispatch.h"
#ifdef COAT_WITH_CUDA
#include "coat/backend/cuda/gemm_fp8.h"
#endif

namespace coat::ops {
namespace {

constexpr const char* kOp = "matmul_fp8";
constexpr int64_t kFp8Multiple = 16;  // cuBLASLt FP8: K and N (the leading dimensions) multiples of 16

void check_operand(const Fp8PerTensor& q, const char* name, const char* dims) {
  COAT_ARG_CHECK(q.codes.defined(), kOp, "operand ", name, ": undefined codes");
  COAT_ARG_CHECK(is_fp8(q.codes.dtype()), kOp, "operand ", name, ": codes have dtype ",
                 dtype_name(q.codes.dtype()), ", expected an FP8 format (e4m3 or e5m2)");
  COAT_ARG_CHECK(q.codes.dim() == 2, kOp, "operand ", name, ": codes must be 2-D ", dims, ", got ",
                 shape_str(q.codes.shape()));
  COAT_ARG_CHECK(q.codes.numel() == 0 || q.codes.is_contiguous(), kOp, "operand ", name,
                 ": codes must be contiguous (K innermost); pass the transposed codes instead of a view");
  COAT_ARG_CHECK(q.scale_inv.defined() && q.scale_inv.numel() == 1 && q.scale_inv.dtype() == DType::F32, kOp,
                 "operand ", name, ": scale_inv must be a one-element f32 tensor (the dequantisation factor)");
  COAT_ARG_CHECK(q.scale_inv.device() == q.codes.device(), kOp, "operand ", name, ": scale_inv on ",
                 q.scale_inv.device().str(), ", codes on ", q.codes.device().str());
}

struct Fp8Dims {
  int64_t m, n, k;
};

Fp8Dims check_operands(const Fp8PerTensor& a, const Fp8PerTensor& b) {
  check_operand(a, "a", "[M,K]");
  check_operand(b, "b", "[N,K]");
  COAT_ARG_CHECK(a.codes.context() == b.codes.context(), kOp, "operands a and b on different contexts (",
                 a.codes.device().str(), " and ", b.codes.device().str(), ")");
  COAT_ARG_CHECK(!(a.codes.dtype() == DType::E5M2 && b.codes.dtype() == DType::E5M2), kOp,
                 "operands a and b are both e5m2: cuBLASLt has no e5m2 x e5m2 GEMM (allowed pairs: "
                 "e4m3 x e4m3, e5m2 x e4m3, e4m3 x e5m2)");
  const Fp8Dims d{a.codes.size(0), b.codes.size(0), a.codes.size(1)};
  COAT_ARG_CHECK(b.codes.size(1) == d.k, kOp, "shapes of a ", shape_str(a.codes.shape()), " [M,K] and b ",
                 shape_str(b.codes.shape()), " [N,K] do not match: K = ", d.k, " and ", b.codes.size(1));
  COAT_ARG_CHECK(d.k % kFp8Multiple == 0, kOp, "K = ", d.k, " (columns of a and b) must be a multiple of ",
                 kFp8Multiple, " for cuBLASLt FP8");
  COAT_ARG_CHECK(d.n % kFp8Multiple == 0, kOp, "N = ", d.n, " (rows of b) must be a multiple of ",
                 kFp8Multiple, " for cuBLASLt FP8");
  return d;
}

void check_out_dtype(DType t) {
  COAT_ARG_CHECK(t == DType::BF16 || t == DType::F32, kOp, "output dtype ", dtype_name(t),
                 " not supported; expected bf16 or f32");
}

}  // namespace

void matmul_fp8(const Fp8PerTensor& a, const Fp8PerTensor& b, Tensor& out, bool accumulate, bool fast_accum) {
  const Fp8Dims d = check_operands(a, b);
  COAT_ARG_CHECK(out.defined(), kOp, "output: undefined tensor");
  check_out_dtype(out.dtype());
  COAT_ARG_CHECK(out.shape() == Shape({d.m, d.n}), kOp, "output shape ", shape_str(out.shape()),
                 " should be ", shape_str({d.m, d.n}), " ([M,N] for a ", shape_str(a.codes.shape()), " and b ",
                 shape_str(b.codes.shape()), ")");
  COAT_ARG_CHECK(out.numel() == 0 || out.is_contiguous(), kOp, "output must be contiguous");
  COAT_ARG_CHECK(out.context() == a.codes.context(), kOp, "output on ", out.device().str(), ", operands on ",
                 a.codes.device().str(), " (must be the same context)");
  COAT_DISPATCH(kOp, out.device(), cpu::matmul_fp8(a.codes, a.scale_inv, b.codes, b.scale_inv, out, accumulate),
                cuda::matmul_fp8(a.codes, a.scale_inv, b.codes, b.scale_inv, out, accumulate, fast_accum));
  (void)fast_accum;  // the CPU reference has one (exact) accumulation
}

Tensor matmul_fp8(const Fp8PerTensor& a, const Fp8PerTensor& b, DType out_dtype, bool fast_accum) {
  const Fp8Dims d = check_operands(a, b);
  check_out_dtype(out_dtype);
  Tensor out = Tensor::empty(a.codes.context(), {d.m, d.n}, out_dtype);
  matmul_fp8(a, b, out, /*accumulate=*/false, fast_accum);
  return out;
}

}  // namespace coat::ops
