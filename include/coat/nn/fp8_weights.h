// The FP8 copies of a model's weights for its FP8 linear layers: per weight W [N, K] the E4M3 codes of W
// (fprop's operand) and of W^T [K, N] (dgrad's), one per-tensor scale, made in one fused quantise +
// transpose pass from the compute weights. They are made at most once per optimizer step: the owner calls
// invalidate() whenever the weights change, and the first use after that re-quantises (micro-batches and
// recomputed forwards reuse them). The optimizer step can hand over the weights' maxima (put_maxima), which
// spares that quantisation its amax pass. With set_keep_transpose(false) a copy holds W's codes only, and
// dgrad's W^T is made from them when the backward asks for it (transposed(): one linear's W^T at a time, the
// same bytes as the kept one, since both are the codes of one scale): half the cache's memory, for one
// transpose copy of W per linear and backward.
#pragma once

#include <cstdint>
#include <unordered_map>

#include "coat/nn/parameter.h"
#include "coat/ops/quantize.h"

namespace coat::nn {

class Fp8Weights {
 public:
  /// The FP8 copy of w.value (codes [N, K], codes_t [K, N] if transposes are kept, scale, scale_inv),
  /// quantised if stale.
  const ops::Fp8PerTensor& get(const Parameter& w);
  /// dgrad's operand: W^T's codes [K, N] with W's scale and inverse; the kept codes_t, or (transposes not
  /// kept) a copy made now from W's codes, which the caller frees when it drops the result.
  ops::Fp8PerTensor transposed(const Parameter& w);
  /// Keep W^T's codes with every copy (true, the default) or make them on each transposed(). Drops every copy.
  void set_keep_transpose(bool keep);
  bool keeps_transpose() const { return keep_transpose_; }
  /// Sets w's copy for the current weights, made elsewhere (a sharded unit gathered as FP8 codes,
  /// dist/fp8_gather.h): codes [N, K], codes_t [K, N] (none when transposes are not kept: one given is
  /// dropped), scale and scale_inv, as quantize_per_tensor makes them.
  void put(const Parameter& w, ops::Fp8PerTensor q);
  /// The maxima of w's quantisation source for the current weights, pieces that cover it exactly (the
  /// optimizer step's granule maxima, ops::adamw_step_quantized): the next get() that quantises w takes its
  /// scale from them instead of a pass over the weight. Valid until the next invalidate().
  void put_maxima(const Parameter& w, Tensor maxima);
  /// Every copy is stale from now on (the weights changed).
  void invalidate() { ++version_; }
  /// Frees every copy (a sharded model's gathered unit after use); the next get quantises again.
  void release() { entries_.clear(); }
  /// Bytes held by the copies.
  size_t bytes() const;
  /// Quantisations done so far (a test hook: once per weight and optimizer step).
  int64_t quantizations() const { return quantizations_; }
  /// Of those, the ones whose scale came from put_maxima's maxima (a test hook).
  int64_t quantizations_from_maxima() const { return from_maxima_; }

 private:
  struct Entry {
    ops::Fp8PerTensor q;
    int64_t version = -1;
    Tensor maxima;               // put_maxima's, for the weights of maxima_version
    int64_t maxima_version = -1;
  };
  std::unordered_map<const Parameter*, Entry> entries_;
  int64_t version_ = 0;
  int64_t quantizations_ = 0;
  int64_t from_maxima_ = 0;
  bool keep_transpose_ = true;
};

}  // namespace coat::nn
