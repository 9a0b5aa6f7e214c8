// COAT's compression of saved activations (mixed granularity, ARCHITECTURE.md idea 1): a non-linear
// function's input kept for its backward as FP8 E4M3 with one scale per 1x16 group along the last dimension
// (1.25 bytes per element instead of 2 for BF16), restored to its dtype in the backward.
#pragma once

#include <vector>

#include "coat/core/tensor.h"

namespace coat::nn {

/// Elements per scale group of the compressed copies.
inline constexpr int64_t kCompressGroup = 16;

/// Whether x can be compressed: its last dimension is a multiple of kCompressGroup.
bool compressible(const Tensor& x);

/// The tensors to save for x [..., C]: {codes (E4M3, x's shape), scale_inv (F32 [..., C / 16])}.
std::vector<Tensor> compress_for_backward(const Tensor& x);

/// x back from saved[first], saved[first + 1] (as compress_for_backward made them), in `dtype`.
Tensor restore_from_backward(const std::vector<Tensor>& saved, size_t first, DType dtype);

}  // namespace coat::nn
