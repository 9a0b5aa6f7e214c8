// The row maxima of a gradient, handed from the backward that produced it (e.g. nn::swiglu_packed's, from
// the same kernel) to the backward of the FP8 linear that quantises it (nn::linear_fp8), so that the
// linear's E5M2 scale needs no amax pass over the gradient: the backward half of the fused producers
// (models::Transformer::set_fused_producers). The tape hands each backward its output gradient; this slot,
// shared by the two nodes' closures, carries the maxima beside it.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>

#include "coat/core/tensor.h"

namespace coat::nn {

/// Takes that found maxima (the fused path ran) and that found none, over any number of slots.
struct GradRowMaximaCounts {
  int64_t hits = 0;
  int64_t misses = 0;
};

class GradRowMaxima {
 public:
  /// totals (when not null): every take is also counted there (e.g. a model's count over all its blocks).
  explicit GradRowMaxima(std::shared_ptr<GradRowMaximaCounts> totals = nullptr) : totals_(std::move(totals)) {}
  /// Keeps `maxima` (F32 [rows]) as those of `grad` (held until taken, so that no other tensor can take
  /// its place in memory meanwhile).
  void put(const Tensor& grad, Tensor maxima);
  /// The maxima if `grad` is the gradient they were put for (the same bytes: storage, offset and element
  /// count), else an undefined tensor (the consumer then makes its own amax pass: e.g. a gradient that the
  /// tape summed from several uses). Either way the slot is emptied.
  Tensor take(const Tensor& grad);
  /// How many takes found maxima (the fused path ran), and how many found none.
  int64_t hits() const { return hits_; }
  int64_t misses() const { return misses_; }

 private:
  Tensor grad_;
  Tensor maxima_;
  int64_t hits_ = 0;
  int64_t misses_ = 0;
  std::shared_ptr<GradRowMaximaCounts> totals_;
};

using GradRowMaximaSlot = std::shared_ptr<GradRowMaxima>;

}  // namespace coat::nn
