// A function's output made again in the backward instead of kept from the forward (train.recompute = qkv):
// the producer (nn::linear, nn::linear_fp8) hands out what it reads and how it computes, and the consumer
// that would have kept the output (nn::packed_attention) keeps those inputs instead. They are tensors the
// producer keeps for its own backward anyway (its input, or an FP8 linear's transposed input codes and scale),
// so keeping them again costs nothing: the tape counts a storage once and frees it after the last node that
// keeps it ran its backward.
#pragma once

#include <functional>
#include <vector>

#include "coat/core/tensor.h"

namespace coat::nn {

struct OutputRemake {
  /// The tensors `make` reads: keep them among the consumer's saved tensors (not in a closure, which the tape
  /// holds until the whole backward ends).
  std::vector<Tensor> inputs;
  /// The producer's forward computation on `inputs`: the forward's output, byte for byte (the same operands
  /// and the same kernel). Holds no tensors itself.
  std::function<Tensor(const std::vector<Tensor>&)> make;

  explicit operator bool() const { return static_cast<bool>(make); }
};

}  // namespace coat::nn
