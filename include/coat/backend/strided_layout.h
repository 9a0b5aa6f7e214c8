// A fixed-size copy of a tensor's shape and strides that kernels (host or device) can take by value,
// and the mapping from a row-major linear index to the strided element offset.
#pragma once

#include <cstdint>

#include "coat/core/host_device.h"
#include "coat/core/tensor.h"

namespace coat {

struct StridedLayout {
  static constexpr int kMaxDims = 8;
  int dims = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};

  /// Element offset (relative to the view's first element) of the linear row-major index.
  COAT_HOST_DEVICE int64_t offset_of(int64_t linear) const {
    int64_t offset = 0;
    for (int d = dims - 1; d >= 0; --d) {
      int64_t i = linear % sizes[d];
      linear /= sizes[d];
      offset += i * strides[d];
    }
    return offset;
  }
};

/// Throws when the tensor has more dimensions than kernels support.
StridedLayout strided_layout_of(const Tensor& t);

}  // namespace coat
