// The FP8 copies of a model's weights for its FP8 linear layers: per weight W [N, K] the E4M3 codes of W
// (fprop's operand) and of W^T [K, N] (dgrad's), one per-tensor scale, made in one fused quantise +
// transpose pass from the compute weights. They are made at most once per optimizer step: the owner calls
// invalidate() whenever the weights change, and the first use after that re-quantises (micro-batches and
// recomputed forwards reuse them).
#pragma once

#include <cstdint>
#include <unordered_map>

#include "coat/nn/parameter.h"
#include "coat/ops/quantize.h"

namespace coat::nn {

class Fp8Weights {
 public:
  /// The FP8 copy of w.value (codes [N, K], codes_t [K, N], scale, scale_inv), quantised if stale.
  const ops::Fp8PerTensor& get(const Parameter& w);
  /// Sets w's copy for the current weights, made elsewhere (a sharded unit gathered as FP8 codes,
  /// dist/fp8_gather.h): codes [N, K], codes_t [K, N], scale and scale_inv, as quantize_per_tensor makes them.
  void put(const Parameter& w, ops::Fp8PerTensor q);
  /// Every copy is stale from now on (the weights changed).
  void invalidate() { ++version_; }
  /// Frees every copy (a sharded model's gathered unit after use); the next get quantises again.
  void release() { entries_.clear(); }
  /// Bytes held by the copies.
  size_t bytes() const;
  /// Quantisations done so far (a test hook: once per weight and optimizer step).
  int64_t quantizations() const { return quantizations_; }

 private:
  struct Entry {
    ops::Fp8PerTensor q;
    int64_t version = -1;
  };
  std::unordered_map<const Parameter*, Entry> entries_;
  int64_t version_ = 0;
  int64_t quantizations_ = 0;
};

}  // namespace coat::nn
