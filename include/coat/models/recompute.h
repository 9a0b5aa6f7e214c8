// Activation recomputation, the choice of train.recompute: kept light (no model headers) so that the
// training config can name it.
#pragma once

#include <string_view>

namespace coat::models {

/// Activation recomputation: None keeps every block's activations for the backward; Qkv keeps no q, k and v:
/// the backward makes them again from the input the q/k/v projection keeps for its weight gradient (the same
/// GEMM and RoPE as the forward, so the same bytes; not under 128-block scaling, whose saved input is grouped
/// along the tokens); Blocks keeps only each block's input and runs the block again in the backward
/// (nn::checkpoint).
enum class Recompute { None, Qkv, Blocks };

/// "none" | "qkv" | "blocks", as train.recompute spells it.
constexpr std::string_view to_string(Recompute recompute) {
  switch (recompute) {
    case Recompute::None: return "none";
    case Recompute::Qkv: return "qkv";
    case Recompute::Blocks: return "blocks";
  }
  return "?";
}

}  // namespace coat::models
