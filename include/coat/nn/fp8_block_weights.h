// The block-scaled FP8 copies of a model's weights for its block-scaled FP8 linear layers (the fp8_block
// recipe, nn::linear_fp8_block): per weight W [N, K] the E4M3 codes of W (fprop's operand) and of W^T [K, N]
// (dgrad's), each with one F32 scale per 128x128 block in cuBLASLt's layout (ops::quantize_128x128). W^T is
// made from W's codes (ops::transpose_128x128: a block of W^T holds the elements of one block of W, so it is
// what quantising W^T would give). Made at most once per optimizer step, as nn::Fp8Weights: the owner calls
// invalidate() whenever the weights change, and the first use after that re-quantises (micro-batches and
// recomputed forwards reuse them). Accounted under MemoryCategory::Weights.
#pragma once

#include <cstdint>
#include <unordered_map>

#include "coat/nn/parameter.h"
#include "coat/ops/quantize_block.h"

namespace coat::nn {

/// One weight's copies: w = W [N, K] and w_t = W^T [K, N], both 128x128-blocked E4M3.
struct Fp8BlockWeight {
  ops::Fp8Blocked w;
  ops::Fp8Blocked w_t;
};

class Fp8BlockWeights {
 public:
  /// The block-scaled FP8 copy of w.quantization_source() (the compute copy, or the master where the model
  /// keeps none), quantised if stale. It must be 2-D with both dimensions multiples of 128 (InvalidArgument
  /// naming the weight otherwise).
  const Fp8BlockWeight& get(const Parameter& w);
  /// Sets w's copies for the current weights, made elsewhere (a sharded unit gathered as FP8 codes,
  /// dist/fp8_gather.h): w and w_t 128x128-blocked as quantize_128x128 and transpose_128x128 make them.
  void put(const Parameter& w, Fp8BlockWeight q);
  /// Every copy is stale from now on (the weights changed).
  void invalidate() { ++version_; }
  /// Frees every copy (a sharded model's gathered unit after use); the next get quantises again.
  void release() { entries_.clear(); }
  /// Bytes held by the copies (codes and scales).
  size_t bytes() const;
  /// Quantisations done so far (a test hook: once per weight and optimizer step).
  int64_t quantizations() const { return quantizations_; }

 private:
  struct Entry {
    Fp8BlockWeight q;
    int64_t version = -1;
  };
  std::unordered_map<const Parameter*, Entry> entries_;
  int64_t version_ = 0;
  int64_t quantizations_ = 0;
};

}  // namespace coat::nn
