#include "coat/nn/grad_row_maxima.h"

#include <utility>

namespace coat::nn {

void GradRowMaxima::put(const Tensor& grad, Tensor maxima) {
  grad_ = grad;
  maxima_ = std::move(maxima);
}

Tensor GradRowMaxima::take(const Tensor& grad) {
  Tensor out;
  if (grad_.defined() && grad.defined() && grad.data_ptr() == grad_.data_ptr() && grad.numel() == grad_.numel() &&
      grad.dtype() == grad_.dtype() && grad.is_contiguous()) {
    out = std::move(maxima_);
  }
  ++(out.defined() ? hits_ : misses_);
  if (totals_) ++(out.defined() ? totals_->hits : totals_->misses);
  grad_ = Tensor();
  maxima_ = Tensor();
  return out;
}

}  // namespace coat::nn
