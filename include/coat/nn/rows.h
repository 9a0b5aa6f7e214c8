// A tensor [..., C] seen as contiguous rows [N, C] (a copy only when it is not contiguous): the layout the
// row-wise kernels (GEMMs, norms, cross-entropy) take.
#pragma once

#include "coat/ops/copy.h"

namespace coat::nn {

inline Tensor as_rows(const Tensor& t) {
  const int64_t cols = t.size(-1);
  return ops::contiguous(t).reshape({t.numel() / cols, cols});
}

}  // namespace coat::nn
