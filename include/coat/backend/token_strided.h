// The token-strided layout of a [B, T, H, Dh] tensor: element stride 1, head stride Dh, batch stride
// T * (token stride), token stride >= H * Dh. A contiguous tensor has it (token stride H * Dh), and so do
// q, k and v sliced along the heads from one packed projection [B, T, Hq + 2 Hkv, Dh] (token stride
// (Hq + 2 Hkv) * Dh). The CUDA attention (cuDNN) takes such views as they are.
#pragma once

#include <cstdint>

#include "coat/core/tensor.h"

namespace coat {

/// The token stride of t when it is a 4-D tensor of the token-strided layout, else -1. Strides of size-1
/// dimensions do not matter; a tensor with one position (T = 1) has token stride = its batch stride (or
/// H * Dh when B = 1 too).
int64_t token_stride_of(const Tensor& t);

}  // namespace coat
