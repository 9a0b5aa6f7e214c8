// COAT's compression of saved activations (mixed granularity, ARCHITECTURE.md idea 1): a non-linear
// function's input kept for its backward as FP8 E4M3 with one scale per 1x16 group along the last dimension
// (1.25 bytes per element instead of 2 for BF16), restored to its dtype in the backward.
#pragma once

#include <vector>

#include "coat/autograd/tape.h"
#include "coat/core/tensor.h"
#include "coat/ops/quantize.h"

namespace coat::nn {

/// Elements per scale group of the compressed copies.
inline constexpr int64_t kCompressGroup = 16;

/// How a function kept its input for the backward (what restore needs; the tensors are in its saved list).
struct SavedInput {
  bool compressed = false;
  DType dtype = DType::F32;
  /// The input from the front of the node's saved list: itself, or decompressed to `dtype`.
  Tensor restore(const std::vector<Tensor>& saved) const;
};

/// Whether save_input keeps x compressed: `compress` is asked, the tape records gradients and x's last
/// dimension is a multiple of kCompressGroup. A producer that makes the compressed copy itself (nn::add)
/// asks the same question.
bool compresses_input(const autograd::Tape& tape, const Tensor& x, bool compress);

/// Appends to `saved` what a function keeps of its input x: x itself, or, when compresses_input, {codes
/// (E4M3, x's shape), scale_inv (F32 [..., C / 16])}. Call it on an empty list: the input sits at its front.
/// precomputed: x's compressed copy made by x's producer (the bytes quantize_per_group(x, kCompressGroup,
/// E4M3) gives, e.g. from ops::add_quantize_per_group), kept instead of quantising x again when x is kept
/// compressed (viewed in x's shape); ignored when undefined or when x is kept as it is.
SavedInput save_input(const autograd::Tape& tape, const Tensor& x, bool compress, std::vector<Tensor>& saved,
                      const ops::Fp8PerGroup* precomputed = nullptr);

}  // namespace coat::nn
