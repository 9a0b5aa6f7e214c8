#include "coat/nn/norm.h"

#include "coat/core/nvtx.h"
#include "coat/nn/compressed_save.h"
#include "coat/nn/rows.h"
#include "coat/ops/norm.h"

namespace coat::nn {

autograd::Var rms_norm(autograd::Tape& tape, const autograd::Var& x, Parameter* weight, double eps, bool compress,
                       const ops::Fp8PerGroup* compressed_x, Tensor* out_row_maxima) {
  const NvtxRange range("rms_norm");
  const Tensor x2 = as_rows(x.value);
  const Tensor w = weight ? weight->value : Tensor();
  ops::NormForward f = ops::rmsnorm_forward(x2, w, eps, /*with_row_max=*/out_row_maxima != nullptr);
  if (out_row_maxima != nullptr) *out_row_maxima = f.row_max;
  const Shape shape = x.shape();
  // COAT: keep x as FP8 with 1x16 group scales (restored to its dtype in the backward) instead of x itself.
  std::vector<Tensor> saved;
  const SavedInput in = save_input(tape, x2, compress, saved, compressed_x);
  saved.push_back(f.rstd);
  return tape.record(
      "rms_norm", f.y.reshape(shape), {x}, std::move(saved),
      [weight, shape, in](const Tensor& dy, const std::vector<Tensor>& saved) -> autograd::Grads {
        const Tensor w = weight ? weight->value : Tensor();
        const Tensor dw = weight ? weight->grad : Tensor();
        return {ops::rmsnorm_backward(as_rows(dy), in.restore(saved), w, saved.back(), dw).reshape(shape)};
      },
      /*force_grad=*/weight != nullptr && weight->needs_grad());
}

autograd::Var layer_norm(autograd::Tape& tape, const autograd::Var& x, double eps, bool compress,
                         const ops::Fp8PerGroup* compressed_x, Tensor* out_row_maxima) {
  const NvtxRange range("layer_norm");
  const Tensor x2 = as_rows(x.value);
  ops::NormForward f = ops::layernorm_forward(x2, eps, /*with_row_max=*/out_row_maxima != nullptr);
  if (out_row_maxima != nullptr) *out_row_maxima = f.row_max;
  const Shape shape = x.shape();
  std::vector<Tensor> saved;
  const SavedInput in = save_input(tape, x2, compress, saved, compressed_x);
  saved.push_back(f.mean);
  saved.push_back(f.rstd);
  return tape.record("layer_norm", f.y.reshape(shape), {x}, std::move(saved),
                     [shape, in](const Tensor& dy, const std::vector<Tensor>& saved) -> autograd::Grads {
                       const size_t n = saved.size();
                       return {ops::layernorm_backward(as_rows(dy), in.restore(saved), saved[n - 2], saved[n - 1])
                                   .reshape(shape)};
                     });
}

}  // namespace coat::nn
