// Activation recomputation, the choice of train.recompute: kept light (no model headers) so that the
// training config can name it.
#pragma once

#include <string_view>

namespace coat::models {

/// Activation recomputation: None keeps every block's activations for the backward; Blocks keeps only
/// each block's input and runs the block again in the backward (nn::checkpoint).
enum class Recompute { None, Blocks };

/// "none" | "blocks", as train.recompute spells it.
constexpr std::string_view to_string(Recompute recompute) {
  switch (recompute) {
    case Recompute::None: return "none";
    case Recompute::Blocks: return "blocks";
  }
  return "?";
}

}  // namespace coat::models
