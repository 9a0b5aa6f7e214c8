#include "coat/nn/linear.h"

#include "coat/core/nvtx.h"
#include "coat/nn/rows.h"
#include "coat/ops/copy.h"
#include "coat/ops/matmul.h"

namespace coat::nn {

namespace {
Shape with_last(Shape shape, int64_t last) {
  shape.back() = last;
  return shape;
}
}  // namespace

autograd::Var linear(autograd::Tape& tape, const autograd::Var& x, Parameter& weight) {
  const NvtxRange range("linear");
  const Tensor& w = weight.value;
  COAT_ARG_CHECK(w.dim() == 2, "linear", "weight '", weight.name, "' must be 2-D, got ", shape_str(w.shape()));
  COAT_ARG_CHECK(x.value.dim() >= 1 && x.value.size(-1) == w.size(1), "linear", "input ", shape_str(x.shape()),
                 " does not match weight '", weight.name, "' of shape ", shape_str(w.shape()));
  const Tensor x2 = as_rows(x.value);
  const Shape in_shape = x.shape();
  Tensor y = ops::matmul(x2, w, false, true).reshape(with_last(in_shape, w.size(0)));
  Parameter* p = &weight;
  const bool want_dx = x.requires_grad();
  return tape.record(
      "linear", std::move(y), {x}, {x2},
      [p, in_shape, want_dx](const Tensor& dy, const std::vector<Tensor>& saved) -> autograd::Grads {
        const Tensor dy2 = as_rows(dy);
        if (p->grad.defined()) {
          Tensor g = p->grad;
          ops::matmul_(dy2, saved[0], g, true, false, 1.0f, 1.0f);
        }
        if (!want_dx) return {Tensor()};
        return {ops::matmul(dy2, p->value).reshape(in_shape)};
      },
      /*force_grad=*/weight.grad.defined());
}

}  // namespace coat::nn
