// A named parameter: views into its unit's flat buffers (ARCHITECTURE.md, idea 2).
//   value  - what the forward computes with (the compute copy; on the CPU in F32 the master itself);
//            undefined for a matrix that only FP8 linears use (they quantise the master)
//   master - the optimizer's copy (FP32; F64 in gradient checks)
//   grad   - the gradient accumulator, in the master's dtype, summed across micro-batches
#pragma once

#include <string>

#include "coat/core/tensor.h"

namespace coat::nn {

struct Parameter {
  std::string name;  ///< HF's name, e.g. "model.layers.0.self_attn.q_proj.weight"
  Tensor value;
  Tensor master;
  Tensor grad;
  bool decay = true;  ///< AdamW weight decay applies
  /// The gradient buffer holds no contribution yet and its contents are stale (a zeroing deferred by the
  /// model for weights that only linear layers use): the first linear backward writes it instead of adding.
  bool grad_unset = false;
  /// The parameter is trained though `grad` may be unbound now: a sharded unit's gradient buffer exists only
  /// while its backward runs, so the forward asks needs_grad(), and the backward then finds `grad` bound.
  bool trainable = false;

  /// Whether functions record a backward for this parameter.
  bool needs_grad() const { return trainable || grad.defined(); }

  /// What FP8 copies are quantised from: the compute copy, or the master where the model keeps no compute
  /// copy of this weight (a block whose linears all run FP8, models/transformer.h).
  const Tensor& quantization_source() const { return value.defined() ? value : master; }
};

}  // namespace coat::nn
