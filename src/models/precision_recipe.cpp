// Precision recipes: the table of precision_recipe.h as flags, and which blocks stay in BF16.
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
  // Every FP8 recipe keeps the wgrad's operand the forward made instead of the BF16 input: fp8 and coat the FP8
  // transposed input (per tensor), fp8_block the 1x128 groups of x^T. Exact: the backward would quantise the
  // same x with the same scale again. The attention output is kept by attention for its own backward: o_proj
  // re-quantises it there instead of keeping a second (FP8) copy, unless attention keeps it compressed (then
  // o_proj keeps its own).
  r.save_fp8_input = role != LinearRole::Out || compress_attention;
  return r;
}

bool PrecisionRecipe::compresses(int64_t layer) const {
  return compress_activations && !layer_in_bf16(layer);
}

bool PrecisionRecipe::compresses_attention_qkv(int64_t /*layer*/) const {
  return compress_attention;
}

bool PrecisionRecipe::compresses_attention_out(int64_t layer) const {
  return compress_attention && linear(layer, LinearRole::Out).save_fp8_input;
}

std::string_view to_string(RecipeKind kind) {
  switch (kind) {
    case RecipeKind::FP32: return "fp32";
    case RecipeKind::BF16: return "bf16";
    case RecipeKind::FP8: return "fp8";
    case RecipeKind::FP8Block: return "fp8_block";
    case RecipeKind::Coat: return "coat";
  }
  return "?";
}

RecipeKind parse_recipe_kind(std::string_view name) {
  for (RecipeKind kind :
       {RecipeKind::FP32, RecipeKind::BF16, RecipeKind::FP8, RecipeKind::FP8Block, RecipeKind::Coat}) {
    if (name == to_string(kind)) return kind;
  }
  throw InvalidArgument(detail::concat("precision.recipe: unknown recipe \"", name,
                                       "\"; expected fp32, bf16, fp8, fp8_block or coat"));
}

PrecisionRecipe make_recipe(const std::string& name, const std::vector<int64_t>& bf16_layers, int64_t num_layers) {
  return make_recipe(parse_recipe_kind(name), bf16_layers, num_layers);
}

PrecisionRecipe make_recipe(RecipeKind kind, const std::vector<int64_t>& bf16_layers, int64_t num_layers) {
  PrecisionRecipe r;
  r.name = std::string(to_string(kind));
  r.fp8_linears = kind == RecipeKind::FP8 || kind == RecipeKind::FP8Block || kind == RecipeKind::Coat;
  r.block_scaled = kind == RecipeKind::FP8Block;
  r.compress_activations = kind == RecipeKind::Coat;
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

int64_t first_block_scaled_qkv(const PrecisionRecipe& recipe, int64_t num_layers) {
  for (int64_t layer = 0; layer < num_layers; ++layer)
    if (recipe.linear(layer, LinearRole::Qkv).block_scaled) return layer;
  return -1;
}

}  // namespace coat::models
