#include "coat/nn/norm.h"

#include "coat/core/nvtx.h"
#include "coat/nn/rows.h"
#include "coat/ops/norm.h"

namespace coat::nn {

autograd::Var rms_norm(autograd::Tape& tape, const autograd::Var& x, Parameter* weight, double eps) {
  const NvtxRange range("rms_norm");
  const Tensor x2 = as_rows(x.value);
  const Tensor w = weight ? weight->value : Tensor();
  ops::NormForward f = ops::rmsnorm_forward(x2, w, eps);
  const Shape shape = x.shape();
  return tape.record(
      "rms_norm", f.y.reshape(shape), {x}, {x2, f.rstd},
      [weight, shape](const Tensor& dy, const std::vector<Tensor>& saved) -> autograd::Grads {
        const Tensor w = weight ? weight->value : Tensor();
        const Tensor dw = weight ? weight->grad : Tensor();
        return {ops::rmsnorm_backward(as_rows(dy), saved[0], w, saved[1], dw).reshape(shape)};
      },
      /*force_grad=*/weight != nullptr && weight->grad.defined());
}

autograd::Var layer_norm(autograd::Tape& tape, const autograd::Var& x, double eps) {
  const NvtxRange range("layer_norm");
  const Tensor x2 = as_rows(x.value);
  ops::NormForward f = ops::layernorm_forward(x2, eps);
  const Shape shape = x.shape();
  return tape.record("layer_norm", f.y.reshape(shape), {x}, {x2, f.mean, f.rstd},
                     [shape](const Tensor& dy, const std::vector<Tensor>& saved) -> autograd::Grads {
                       return {ops::layernorm_backward(as_rows(dy), saved[0], saved[1], saved[2]).reshape(shape)};
                     });
}

}  // namespace coat::nn
