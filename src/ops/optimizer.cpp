// Optimizer kernels: validation here, kernels in the backends.
#include "coat/ops/optimizer.h"

#include <cmath>

#include "coat/backend/cpu/optimizer.h"
#include "coat/ops/copy.h"
#include "coat/ops/dispatch.h"
#ifdef COAT_WITH_CUDA
#include "coat/backend/cuda/optimizer.h"
#endif

namespace coat::ops {
namespace {

void check_state_operand(const Tensor& t, const Tensor& param, std::string_view role) {
  COAT_ARG_CHECK(t.defined(), "adamw_step", role, " is undefined");
  COAT_ARG_CHECK(t.dtype() == DType::F32, "adamw_step", role, " has dtype ", dtype_name(t.dtype()),
                 "; expected f32");
  COAT_ARG_CHECK(t.is_contiguous(), "adamw_step", role, " ", shape_str(t.shape()), " must be contiguous");
  COAT_ARG_CHECK(t.numel() == param.numel(), "adamw_step", role, " has ", t.numel(), " elements ",
                 shape_str(t.shape()), " but param has ", param.numel(), " ", shape_str(param.shape()));
  COAT_ARG_CHECK(t.device() == param.device(), "adamw_step", role, " is on ", t.device().str(),
                 " but param is on ", param.device().str());
}

void check_hyper(const AdamWHyper& h) {
  COAT_ARG_CHECK(std::isfinite(h.lr) && h.lr >= 0.0f, "adamw_step", "lr ", h.lr, " must be finite and >= 0");
  COAT_ARG_CHECK(h.beta1 >= 0.0f && h.beta1 < 1.0f, "adamw_step", "beta1 ", h.beta1, " must be in [0, 1)");
  COAT_ARG_CHECK(h.beta2 >= 0.0f && h.beta2 < 1.0f, "adamw_step", "beta2 ", h.beta2, " must be in [0, 1)");
  COAT_ARG_CHECK(std::isfinite(h.eps) && h.eps >= 0.0f, "adamw_step", "eps ", h.eps, " must be finite and >= 0");
  COAT_ARG_CHECK(std::isfinite(h.weight_decay) && h.weight_decay >= 0.0f, "adamw_step", "weight_decay ",
                 h.weight_decay, " must be finite and >= 0");
  COAT_ARG_CHECK(h.step >= 1, "adamw_step", "step ", h.step, " must be >= 1 (1-based, for bias correction)");
  COAT_ARG_CHECK(std::isfinite(h.grad_scale), "adamw_step", "grad_scale ", h.grad_scale, " must be finite");
}

}  // namespace

void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWHyper& h) {
  COAT_ARG_CHECK(param.defined(), "adamw_step", "param is undefined");
  check_state_operand(param, param, "param");
  check_state_operand(grad, param, "grad");
  check_state_operand(m, param, "exp_avg (m)");
  check_state_operand(v, param, "exp_avg_sq (v)");
  check_hyper(h);
  if (param.numel() == 0) return;
  const adamw_math::AdamWScalars s =
      adamw_math::adamw_scalars(h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, h.step, h.grad_scale);
  COAT_DISPATCH("adamw_step", param.device(), cpu::adamw_step(param, grad, m, v, s),
                cuda::adamw_step(param, grad, m, v, s));
}

Tensor sum_squares(const Tensor& x) {
  COAT_ARG_CHECK(x.defined(), "sum_squares", "undefined tensor");
  COAT_ARG_CHECK(is_floating(x.dtype()), "sum_squares", "dtype ", dtype_name(x.dtype()),
                 " not supported; expected a float dtype (f32, f64, bf16, f16, e4m3, e5m2)");
  const Tensor cx = contiguous(x);
  Tensor out = Tensor::empty(x.context(), {1}, DType::F64, MemoryCategory::Workspace);
  COAT_DISPATCH("sum_squares", x.device(), cpu::sum_squares(cx, out),
                cuda::sum_squares(cx, out));
  return out;
}

void flag_nonfinite(Tensor& flag, const Tensor& x) {
  const char* op = "flag_nonfinite";
  COAT_ARG_CHECK(flag.defined() && flag.dtype() == DType::I32 && flag.numel() == 1 && flag.is_contiguous(), op,
                 "flag must be a contiguous i32 tensor of one element, got ",
                 flag.defined() ? flag.str() : std::string("undefined"));
  COAT_ARG_CHECK(x.defined() && (x.dtype() == DType::F32 || x.dtype() == DType::F64), op,
                 "x must be an f32 or f64 tensor, got ", x.defined() ? x.str() : std::string("undefined"));
  COAT_ARG_CHECK(x.device() == flag.device(), op, "x is on ", x.device().str(), " but the flag is on ",
                 flag.device().str());
  if (x.numel() == 0) return;
  const Tensor cx = contiguous(x);
  COAT_DISPATCH(op, x.device(), cpu::flag_nonfinite(flag, cx), cuda::flag_nonfinite(flag, cx));
}

}  // namespace coat::ops
