#include "coat/nn/norm.h"

#include <utility>

#include "coat/core/nvtx.h"
#include "coat/nn/compressed_save.h"
#include "coat/nn/rows.h"
#include "coat/ops/norm.h"

namespace coat::nn {

namespace {

/// What x's other uses have given its gradient so far (the residual stream's), as rows; undefined when none or
/// when the backward does not fuse the sum (the tape adds it then).
Tensor residual_rows(autograd::Tape& tape, int64_t x_slot, bool fuse) {
  if (!fuse) return Tensor();
  const Tensor g = tape.take_grad(autograd::Var{Tensor(), x_slot});
  return g.defined() ? as_rows(g) : Tensor();
}

/// dx (rows) back in x's shape, its row maxima handed to the slot when there is one.
Tensor finish_dx(const Tensor& dx, const Shape& shape, const GradRowMaximaSlot& dx_maxima, Tensor maxima) {
  Tensor out = dx.reshape(shape);
  if (dx_maxima) dx_maxima->put(out, std::move(maxima));
  return out;
}

}  // namespace

autograd::Var rms_norm(autograd::Tape& tape, const autograd::Var& x, Parameter* weight, double eps, bool compress,
                       const ops::Fp8PerGroup* compressed_x, Tensor* out_row_maxima, NormFusion fusion) {
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
      [weight, shape, in, &tape, x_slot = x.slot, fusion = std::move(fusion)](
          const Tensor& dy, const std::vector<Tensor>& saved) -> autograd::Grads {
        const Tensor w = weight ? weight->value : Tensor();
        const Tensor dw = weight ? weight->grad : Tensor();
        Tensor maxima;
        // COAT's compressed x is restored inside the kernel (no restore pass).
        const Tensor residual = residual_rows(tape, x_slot, fusion.residual);
        Tensor* m = fusion.dx_maxima ? &maxima : nullptr;
        const Tensor dx =
            in.compressed && fusion.restore
                ? ops::rmsnorm_backward_compressed(as_rows(dy), saved[0], saved[1], w, saved.back(), dw, residual, m)
                : ops::rmsnorm_backward(as_rows(dy), in.restore(saved), w, saved.back(), dw, residual, m);
        return {finish_dx(dx, shape, fusion.dx_maxima, std::move(maxima))};
      },
      /*force_grad=*/weight != nullptr && weight->needs_grad());
}

autograd::Var layer_norm(autograd::Tape& tape, const autograd::Var& x, double eps, bool compress,
                         const ops::Fp8PerGroup* compressed_x, Tensor* out_row_maxima, NormFusion fusion) {
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
                     [shape, in, &tape, x_slot = x.slot, fusion = std::move(fusion)](
                         const Tensor& dy, const std::vector<Tensor>& saved) -> autograd::Grads {
                       const size_t n = saved.size();
                       Tensor maxima;
                       const Tensor residual = residual_rows(tape, x_slot, fusion.residual);
                       Tensor* m = fusion.dx_maxima ? &maxima : nullptr;
                       const Tensor dx =
                           in.compressed && fusion.restore
                               ? ops::layernorm_backward_compressed(as_rows(dy), saved[0], saved[1], saved[n - 2],
                                                                    saved[n - 1], residual, m)
                               : ops::layernorm_backward(as_rows(dy), in.restore(saved), saved[n - 2], saved[n - 1],
                                                         residual, m);
                       return {finish_dx(dx, shape, fusion.dx_maxima, std::move(maxima))};
                     });
}

}  // namespace coat::nn
