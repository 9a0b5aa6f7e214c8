// The precision recipe of a model as data (ARCHITECTURE.md, idea 3): which linear layers run FP8 GEMMs and
// what each function keeps for its backward. The three recipes are rows of one table:
//
//   recipe  block linears                       saved activations
//   bf16    BF16 GEMMs                          BF16
//   fp8     FP8 GEMMs (TransformerEngine-like)  BF16 (each FP8 linear re-quantises its saved BF16 input in the
//                                               backward)
//   coat    FP8 GEMMs                           compressed: linear inputs as the FP8 (transposed) tensor the
//                                               forward quantised; norm and SwiGLU inputs as FP8 E4M3 with 1x16
//                                               group scales; attention in BF16 (the o_proj input is the
//                                               attention output it already keeps, not saved again)
//
// FP8 GEMMs: fprop E4M3 x E4M3 with fast accumulation, dgrad E5M2 (gradient) x E4M3 (weight), wgrad E5M2 x
// E4M3, FP32 accumulation in cuBLASLt, BF16 outputs, weight gradients accumulated in FP32; per-tensor scales
// computed just in time (amax of the tensor, on the device). Weights and their transposes are quantised once
// per optimizer step. The LM head always stays BF16 (its logits feed the loss directly), and per-layer
// overrides (`precision.bf16_layers`) keep whole blocks in BF16.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace coat::models {

/// How one linear layer computes and what it keeps for its backward.
struct LinearRecipe {
  bool fp8 = false;             ///< FP8 GEMMs (see the top of this file)
  bool save_fp8_input = false;  ///< keep the FP8 transposed input (coat) instead of the BF16 input
};

/// The linear layers of a block, by what their input is.
enum class LinearRole {
  Qkv,     ///< input: the attention norm's output
  Out,     ///< input: the attention output (kept by attention itself)
  GateUp,  ///< input: the MLP norm's output
  Down,    ///< input: the SwiGLU output
};

struct PrecisionRecipe {
  std::string name = "bf16";           ///< bf16 | fp8 | coat (fp32 is the CPU reference: no FP8 anywhere)
  bool fp8_linears = false;            ///< the blocks' linear layers run FP8 GEMMs
  bool compress_activations = false;   ///< coat's saved-activation compression
  std::vector<int64_t> bf16_layers;    ///< blocks kept in BF16, as indices in [0, layers), sorted, unique

  bool layer_in_bf16(int64_t layer) const;
  /// The recipe of linear `role` in block `layer`.
  LinearRecipe linear(int64_t layer, LinearRole role) const;
  /// Whether block `layer` saves its norm and SwiGLU inputs as FP8 1x16 groups.
  bool compresses(int64_t layer) const;
};

/// The recipe named `name` (fp32 | bf16 | fp8 | coat) for a model of `num_layers` blocks; bf16_layers may
/// count from the end (-1 is the last block). Throws InvalidArgument naming precision.recipe /
/// precision.bf16_layers for an unknown name or a layer out of range.
PrecisionRecipe make_recipe(const std::string& name, const std::vector<int64_t>& bf16_layers, int64_t num_layers);

}  // namespace coat::models
