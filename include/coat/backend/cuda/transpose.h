// cuda kernel: the contiguous copy of a transposed 2-D view, through shared-memory tiles (coalesced reads and
// writes), moving the elements' bytes as they are. cuda::copy takes it for a same-dtype copy of such a view
// (e.g. an FP8 linear's transposed input codes transposed back: train.recompute = qkv).
#pragma once

#include "coat/core/tensor.h"

namespace coat::cuda {

/// dst <- src when src is a 2-D [R, C] view with strides {1, R} (the transpose of contiguous [C, R] data), dst
/// is contiguous [R, C] of the same dtype with 1-, 2- or 4-byte elements, and the tile grid fits; returns
/// false (nothing launched) otherwise.
bool try_transpose_copy(const Tensor& src, Tensor& dst);

}  // namespace coat::cuda
