#include "coat/models/precision_recipe.h"

#include <algorithm>

#include "coat/core/error.h"

namespace coat::models {

bool PrecisionRecipe::layer_in_bf16(int64_t layer) const {
  return std::binary_search(bf16_layers.begin(), bf16_layers.end(), layer);
}

LinearRecipe PrecisionRecipe::linear(int64_t layer, LinearRole role) const {
  LinearRecipe r;
  if (!fp8_linears || layer_in_bf16(layer)) return r;
  r.fp8 = true;
  r.block_scaled = block_scaled;
  // The attention output is kept by attention for its own backward: o_proj re-quantises it there instead of
  // keeping a second (FP8) copy.
  r.save_fp8_input = compress_activations && role != LinearRole::Out;
  return r;
}

bool PrecisionRecipe::compresses(int64_t layer) const {
  return compress_activations && !layer_in_bf16(layer);
}

PrecisionRecipe make_recipe(const std::string& name, const std::vector<int64_t>& bf16_layers, int64_t num_layers) {
  PrecisionRecipe r;
  r.name = name;
  if (name == "fp8") {
    r.fp8_linears = true;
  } else if (name == "fp8_block") {
    r.fp8_linears = true;
    r.block_scaled = true;
  } else if (name == "coat") {
    r.fp8_linears = true;
    r.compress_activations = true;
  } else if (name != "bf16" && name != "fp32") {
    throw InvalidArgument(detail::concat("precision.recipe: unknown recipe \"", name,
                                         "\"; expected fp32, bf16, fp8, fp8_block or coat"));
  }
  for (int64_t layer : bf16_layers) {
    const int64_t index = layer < 0 ? layer + num_layers : layer;
    COAT_CHECK(index >= 0 && index < num_layers, InvalidArgument, "precision.bf16_layers: layer ", layer,
               " is out of range for a model of ", num_layers, " layers (expected -", num_layers, " .. ",
               num_layers - 1, ")");
    r.bf16_layers.push_back(index);
  }
  std::sort(r.bf16_layers.begin(), r.bf16_layers.end());
  r.bf16_layers.erase(std::unique(r.bf16_layers.begin(), r.bf16_layers.end()), r.bf16_layers.end());
  return r;
}

}  // namespace coat::models
