// Normalisations: validation here, kernels in the backends.
#include "coat/ops/norm.h"

#include <cmath>
#include <utility>

#include "coat/backend/cpu/norm.h"
#include "coat/ops/copy.h"
#include "coat/ops/dispatch.h"
#include "coat/ops/quantize.h"
#ifdef COAT_WITH_CUDA
#include "coat/backend/cuda/norm.h"
#endif

namespace coat::ops {
namespace {

bool is_activation_dtype(DType t) {
  return t == DType::F32 || t == DType::F64 || t == DType::BF16;
}
DType stat_dtype(DType t) {
  return t == DType::F64 ? DType::F64 : DType::F32;
}

/// Checks x and returns the number of rows N of x seen as [N, D].
int64_t check_input(const Tensor& x, const char* op) {
  COAT_ARG_CHECK(x.defined(), op, "x is undefined");
  COAT_ARG_CHECK(is_activation_dtype(x.dtype()), op, "x has dtype ", dtype_name(x.dtype()),
                 "; expected f32, f64 or bf16");
  COAT_ARG_CHECK(x.dim() >= 1 && x.size(-1) > 0, op, "x ", shape_str(x.shape()),
                 " needs a non-empty last dimension to normalise over");
  return x.numel() / x.size(-1);
}

void check_eps(double eps, const char* op) {
  COAT_ARG_CHECK(std::isfinite(eps) && eps >= 0.0, op, "eps ", eps, " must be finite and >= 0");
}

void check_like(const Tensor& t, const Tensor& x, const char* op, const char* name) {
  COAT_ARG_CHECK(t.defined(), op, name, " is undefined");
  COAT_ARG_CHECK(t.shape() == x.shape(), op, name, " has shape ", shape_str(t.shape()), " but x has ",
                 shape_str(x.shape()));
  COAT_ARG_CHECK(t.dtype() == x.dtype(), op, name, " has dtype ", dtype_name(t.dtype()), " but x has ",
                 dtype_name(x.dtype()));
  COAT_ARG_CHECK(t.device() == x.device(), op, name, " is on ", t.device().str(), " but x is on ",
                 x.device().str());
}

void check_weight(const Tensor& weight, const Tensor& x, const char* op) {
  if (!weight.defined()) return;
  COAT_ARG_CHECK(weight.dim() == 1 && weight.size(0) == x.size(-1), op, "weight has shape ",
                 shape_str(weight.shape()), "; expected [", x.size(-1), "] for x ", shape_str(x.shape()));
  COAT_ARG_CHECK(weight.dtype() == x.dtype(), op, "weight has dtype ", dtype_name(weight.dtype()),
                 " but x has ", dtype_name(x.dtype()));
  COAT_ARG_CHECK(weight.device() == x.device(), op, "weight is on ", weight.device().str(), " but x is on ",
                 x.device().str());
}

void check_stat(const Tensor& s, const Tensor& x, int64_t rows, const char* op, const char* name) {
  COAT_ARG_CHECK(s.defined(), op, name, " is undefined");
  COAT_ARG_CHECK(s.numel() == rows, op, name, " has shape ", shape_str(s.shape()), "; expected [", rows,
                 "] (one value per row of x ", shape_str(x.shape()), ")");
  COAT_ARG_CHECK(s.dtype() == stat_dtype(x.dtype()), op, name, " has dtype ", dtype_name(s.dtype()),
                 "; expected ", dtype_name(stat_dtype(x.dtype())), " for x of ", dtype_name(x.dtype()));
  COAT_ARG_CHECK(s.device() == x.device(), op, name, " is on ", s.device().str(), " but x is on ",
                 x.device().str());
}

/// The row maxima of a forward's output when asked for (F32 [rows], activations of the forward that live until
/// the quantisation that takes them), else undefined; only outputs FP8 quantisation reads have them.
Tensor row_max_output(const Tensor& x, int64_t rows, bool with_row_max, const char* op) {
  if (!with_row_max) return Tensor();
  COAT_ARG_CHECK(x.dtype() == DType::F32 || x.dtype() == DType::BF16, op, "row maxima are written for f32 and ",
                 "bf16 outputs (what FP8 quantisation reads), not ", dtype_name(x.dtype()));
  return Tensor::empty(x.context(), {rows}, DType::F32);
}

}  // namespace

NormForward rmsnorm_forward(const Tensor& x, const Tensor& weight, double eps, bool with_row_max) {
  const int64_t rows = check_input(x, "rmsnorm_forward");
  check_weight(weight, x, "rmsnorm_forward");
  check_eps(eps, "rmsnorm_forward");
  const Tensor cx = contiguous(x);
  const Tensor cw = weight.defined() ? contiguous(weight) : Tensor();
  NormForward out;
  out.y = Tensor::empty(x.context(), x.shape(), x.dtype());
  out.rstd = Tensor::empty(x.context(), {rows}, stat_dtype(x.dtype()));
  out.row_max = row_max_output(x, rows, with_row_max, "rmsnorm_forward");
  Tensor* row_max = with_row_max ? &out.row_max : nullptr;
  COAT_DISPATCH("rmsnorm_forward", x.device(), cpu::rmsnorm_forward(cx, cw, eps, out.y, out.rstd, row_max),
                cuda::rmsnorm_forward(cx, cw, eps, out.y, out.rstd, row_max));
  return out;
}

namespace {

/// x as a backward gets it: `x`, or (x undefined) COAT's compressed copy of an x of dy's shape and dtype.
struct BackwardX {
  Tensor x, codes, scale_inv;
  /// What the checks compare the other operands with: x, or dy (which has x's shape, dtype and device).
  const Tensor& like(const Tensor& dy) const { return x.defined() ? x : dy; }
};

/// The compressed copy checked against dy (E4M3 codes of dy's shape, one F32 scale per 16 along the rows).
BackwardX compressed_x(const Tensor& dy, const Tensor& codes, const Tensor& scale_inv, const char* op) {
  COAT_ARG_CHECK(dy.defined() && (dy.dtype() == DType::F32 || dy.dtype() == DType::BF16), op,
                 "dy (and the restored x) must be f32 or bf16, got ", dy.defined() ? dtype_name(dy.dtype()) : "undefined");
  COAT_ARG_CHECK(codes.defined() && codes.dtype() == DType::E4M3 && codes.shape() == dy.shape(), op,
                 "x's codes must be E4M3 of dy's shape ", shape_str(dy.shape()), ", got ",
                 codes.defined() ? codes.str() : "undefined");
  COAT_ARG_CHECK(dy.size(-1) % 16 == 0, op, "x's rows (", dy.size(-1), " codes) must be whole groups of 16");
  COAT_ARG_CHECK(scale_inv.defined() && scale_inv.dtype() == DType::F32 && scale_inv.numel() * 16 == codes.numel(),
                 op, "scale_inv must be F32 with one value per 16 codes (", codes.numel() / 16, "), got ",
                 scale_inv.defined() ? scale_inv.str() : "undefined");
  COAT_ARG_CHECK(codes.device() == dy.device() && scale_inv.device() == dy.device(), op,
                 "dy, codes and scale_inv must be on one device");
  BackwardX in;
  in.codes = contiguous(codes);
  in.scale_inv = contiguous(scale_inv);
  if (dy.device().is_cpu()) {  // the CPU reference restores x first (the same values by construction)
    Fp8PerGroup q;
    q.codes = in.codes;
    Shape scales = dy.shape();
    scales.back() /= 16;
    q.scale_inv = in.scale_inv.reshape(scales);
    q.group_size = 16;
    in.x = dequantize(q, dy.dtype());
  }
  return in;
}

Tensor rms_backward(const Tensor& dy, const BackwardX& in, const Tensor& weight, const Tensor& rstd,
                    Tensor dweight_accum, const Tensor& residual, Tensor* row_max) {
  const Tensor& x = in.like(dy);
  const int64_t rows = check_input(x, "rmsnorm_backward");
  check_like(dy, x, "rmsnorm_backward", "dy");
  if (residual.defined()) check_like(residual, x, "rmsnorm_backward", "residual");
  check_weight(weight, x, "rmsnorm_backward");
  check_stat(rstd, x, rows, "rmsnorm_backward", "rstd");
  if (weight.defined()) {
    COAT_ARG_CHECK(dweight_accum.defined(), "rmsnorm_backward",
                   "weight is defined, so dweight_accum must be its gradient accumulator");
    COAT_ARG_CHECK(dweight_accum.shape() == weight.shape(), "rmsnorm_backward", "dweight_accum has shape ",
                   shape_str(dweight_accum.shape()), " but weight has ", shape_str(weight.shape()));
    COAT_ARG_CHECK(dweight_accum.dtype() == DType::F32 || dweight_accum.dtype() == DType::F64,
                   "rmsnorm_backward", "dweight_accum has dtype ", dtype_name(dweight_accum.dtype()),
                   "; expected f32 or f64");
    COAT_ARG_CHECK(dweight_accum.is_contiguous(), "rmsnorm_backward", "dweight_accum must be contiguous");
    COAT_ARG_CHECK(dweight_accum.device() == x.device(), "rmsnorm_backward", "dweight_accum is on ",
                   dweight_accum.device().str(), " but x is on ", x.device().str());
  } else {
    COAT_ARG_CHECK(!dweight_accum.defined(), "rmsnorm_backward",
                   "dweight_accum is given but weight is undefined (no affine weight)");
  }
  const Tensor cdy = contiguous(dy), cr = contiguous(rstd);
  const Tensor cx = in.x.defined() ? contiguous(in.x) : Tensor();
  const Tensor cw = weight.defined() ? contiguous(weight) : Tensor();
  const Tensor cres = residual.defined() ? contiguous(residual) : Tensor();
  if (row_max != nullptr) *row_max = row_max_output(x, rows, true, "rmsnorm_backward");
  Tensor dx = Tensor::empty(x.context(), x.shape(), x.dtype());
  COAT_DISPATCH("rmsnorm_backward", x.device(),
                cpu::rmsnorm_backward(cdy, cx, cw, cr, dx, dweight_accum, cres, row_max),
                cuda::rmsnorm_backward(cdy, cuda::NormInput{cx, in.codes, in.scale_inv}, cw, cr, dx, dweight_accum,
                                       cres, row_max));
  return dx;
}

Tensor ln_backward(const Tensor& dy, const BackwardX& in, const Tensor& mean, const Tensor& rstd,
                   const Tensor& residual, Tensor* row_max) {
  const Tensor& x = in.like(dy);
  const int64_t rows = check_input(x, "layernorm_backward");
  check_like(dy, x, "layernorm_backward", "dy");
  if (residual.defined()) check_like(residual, x, "layernorm_backward", "residual");
  check_stat(mean, x, rows, "layernorm_backward", "mean");
  check_stat(rstd, x, rows, "layernorm_backward", "rstd");
  const Tensor cdy = contiguous(dy), cm = contiguous(mean), cr = contiguous(rstd);
  const Tensor cx = in.x.defined() ? contiguous(in.x) : Tensor();
  const Tensor cres = residual.defined() ? contiguous(residual) : Tensor();
  if (row_max != nullptr) *row_max = row_max_output(x, rows, true, "layernorm_backward");
  Tensor dx = Tensor::empty(x.context(), x.shape(), x.dtype());
  COAT_DISPATCH("layernorm_backward", x.device(), cpu::layernorm_backward(cdy, cx, cm, cr, dx, cres, row_max),
                cuda::layernorm_backward(cdy, cuda::NormInput{cx, in.codes, in.scale_inv}, cm, cr, dx, cres,
                                         row_max));
  return dx;
}

}  // namespace

Tensor rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd,
                        Tensor dweight_accum, const Tensor& residual, Tensor* row_max) {
  COAT_ARG_CHECK(x.defined(), "rmsnorm_backward", "x is undefined");
  return rms_backward(dy, BackwardX{x, Tensor(), Tensor()}, weight, rstd, std::move(dweight_accum), residual,
                      row_max);
}

Tensor rmsnorm_backward_compressed(const Tensor& dy, const Tensor& codes, const Tensor& scale_inv,
                                   const Tensor& weight, const Tensor& rstd, Tensor dweight_accum,
                                   const Tensor& residual, Tensor* row_max) {
  return rms_backward(dy, compressed_x(dy, codes, scale_inv, "rmsnorm_backward_compressed"), weight, rstd,
                      std::move(dweight_accum), residual, row_max);
}

NormForward layernorm_forward(const Tensor& x, double eps, bool with_row_max) {
  const int64_t rows = check_input(x, "layernorm_forward");
  check_eps(eps, "layernorm_forward");
  const Tensor cx = contiguous(x);
  NormForward out;
  out.y = Tensor::empty(x.context(), x.shape(), x.dtype());
  out.mean = Tensor::empty(x.context(), {rows}, stat_dtype(x.dtype()));
  out.rstd = Tensor::empty(x.context(), {rows}, stat_dtype(x.dtype()));
  out.row_max = row_max_output(x, rows, with_row_max, "layernorm_forward");
  Tensor* row_max = with_row_max ? &out.row_max : nullptr;
  COAT_DISPATCH("layernorm_forward", x.device(),
                cpu::layernorm_forward(cx, eps, out.y, out.mean, out.rstd, row_max),
                cuda::layernorm_forward(cx, eps, out.y, out.mean, out.rstd, row_max));
  return out;
}

Tensor layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                          const Tensor& residual, Tensor* row_max) {
  COAT_ARG_CHECK(x.defined(), "layernorm_backward", "x is undefined");
  return ln_backward(dy, BackwardX{x, Tensor(), Tensor()}, mean, rstd, residual, row_max);
}

Tensor layernorm_backward_compressed(const Tensor& dy, const Tensor& codes, const Tensor& scale_inv,
                                     const Tensor& mean, const Tensor& rstd, const Tensor& residual,
                                     Tensor* row_max) {
  return ln_backward(dy, compressed_x(dy, codes, scale_inv, "layernorm_backward_compressed"), mean, rstd, residual,
                     row_max);
}

}  // namespace coat::ops
