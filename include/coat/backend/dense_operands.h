// Layout checks the matrix-product backends share: dense operands and overlapping memory.
#pragma once

#include "coat/core/tensor.h"

namespace coat {

/// Contiguous, or empty (an empty tensor has no layout to get wrong, whatever its strides say).
inline bool is_dense(const Tensor& t) { return t.numel() == 0 || t.is_contiguous(); }

/// Whether the bytes of x and y overlap (an output must not alias an input).
inline bool ranges_overlap(const Tensor& x, const Tensor& y) {
  const auto* x0 = static_cast<const char*>(x.data_ptr());
  const auto* y0 = static_cast<const char*>(y.data_ptr());
  if (x.nbytes() == 0 || y.nbytes() == 0) return false;
  return x0 < y0 + y.nbytes() && y0 < x0 + x.nbytes();
}

}  // namespace coat
