// How a model's parameters lie in its flat units (ARCHITECTURE.md, idea 2): unit "embed", one unit per
// block ("layers.i") and unit "head" (final norm weight and lm_head, when they exist); inside a unit the
// parameters follow each other in HF's order, each starting on a 64-element boundary (256 bytes in F32),
// except in a block k_proj and v_proj follow q_proj directly and up_proj follows gate_proj directly (no
// padding), so that [q; k; v] and [gate; up] are one matrix each (Transformer's fused projections).
// The model allocates from this layout and the memory plan counts from it.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "coat/core/tensor.h"
#include "coat/models/model_config.h"

namespace coat::models {

struct UnitLayout {
  std::string name;
  std::vector<std::pair<std::string, Shape>> params;  ///< HF names and shapes, in buffer order
  std::vector<int64_t> offsets;                       ///< element offset of each parameter in the unit
  int64_t numel = 0;  ///< elements of the flat buffer, alignment padding included
};

/// Elements between parameter starts: parameters begin on 64-element boundaries.
inline constexpr int64_t kUnitAlignElements = 64;

/// The units of a model, in allocation order.
std::vector<UnitLayout> unit_layouts(const ModelConfig& config);

}  // namespace coat::models
