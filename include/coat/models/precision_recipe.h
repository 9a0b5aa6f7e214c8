// The precision recipe of a model as data (ARCHITECTURE.md, idea 3): which linear layers run FP8 GEMMs and
// what each function keeps for its backward. The four recipes are rows of one table:
//
//   recipe     block linears                        saved activations
//   bf16       BF16 GEMMs                           BF16
//   fp8        FP8 GEMMs (TransformerEngine-like)   linear inputs (not o_proj's) as the FP8 transposed tensor the
//                                                   forward quantised (exact: the backward would quantise the
//                                                   same x with the same scale); norm and SwiGLU inputs BF16
//   fp8_block  128-block-scaled FP8 GEMMs           linear inputs (not o_proj's) as the 1x128 groups of
//              (DeepSeek-V3-like,                   their transpose that the wgrad takes, made in the forward
//              nn::linear_fp8_block)                from the same read as fprop's; norm and SwiGLU inputs BF16
//   coat       FP8 GEMMs                            compressed: linear inputs as the FP8 (transposed) tensor the
//                                                   forward quantised; norm and SwiGLU inputs as FP8 E4M3 with
//                                                   1x16 group scales; attention in BF16 (the o_proj input is
//                                                   the attention output it already keeps, not saved again)
//
// precision.compress_attention (any recipe; off by default) keeps attention's saved q, k, v (after RoPE) and
// output as FP8 E4M3 with 1x16 group scales, as coat keeps the norm and SwiGLU inputs, restored to BF16 for
// cuDNN's BF16 backward; the o_proj of an FP8 block then keeps its own FP8 transposed input (as coat's other
// linears do), since the attention output is no longer kept in BF16.
//
// precision.cache_weight_transpose = false (fp8 and coat; on by default) keeps only W's E4M3 codes between
// steps; the backward makes W^T's from them for each dgrad, the same bytes (nn::Fp8Weights).
//
// FP8 GEMMs (fp8, coat): fprop E4M3 x E4M3 with fast accumulation, dgrad E5M2 (gradient) x E4M3 (weight),
// wgrad E5M2 x E4M3, FP32 accumulation in cuBLASLt, BF16 outputs, weight gradients accumulated in FP32;
// per-tensor scales computed just in time (amax of the tensor, on the device).
// 128-block-scaled FP8 GEMMs (fp8_block): the same formats, with one scale per 1x128 group of an activation or
// gradient (along the GEMM's reduction dimension: the features in fprop and dgrad, the tokens in wgrad) and per
// 128x128 block of a weight; cuBLASLt's VEC128_32F / BLK128x128_32F scale modes (Hopper), no fast
// accumulation. Every block linear's in and out features and the tokens of a micro-batch must be multiples of
// 128 (other layers belong in precision.bf16_layers). Optimizer states under optim.state_dtype = auto: fp32.
// Weights and their transposes are quantised once per optimizer step. The LM head always stays BF16 (its
// logits feed the loss directly), and per-layer overrides (`precision.bf16_layers`) keep whole blocks in BF16.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace coat::models {

/// The recipes of the table above, and fp32 (the CPU reference: F32 everywhere, no FP8).
enum class RecipeKind { FP32, BF16, FP8, FP8Block, Coat };

/// "fp32" | "bf16" | "fp8" | "fp8_block" | "coat", as precision.recipe spells it.
std::string_view to_string(RecipeKind kind);
/// The inverse of to_string; throws InvalidArgument naming precision.recipe and the valid names.
RecipeKind parse_recipe_kind(std::string_view name);

/// How one linear layer computes and what it keeps for its backward.
struct LinearRecipe {
  bool fp8 = false;             ///< FP8 GEMMs (see the top of this file)
  bool save_fp8_input = false;  ///< keep the FP8 transposed input (coat; fp8_block: its 1x128 groups) instead of BF16
  bool block_scaled = false;    ///< with fp8: 128-block scales (fp8_block, nn::linear_fp8_block), not per tensor
  /// FP8 GEMMs on per-tensor scales (fp8, coat): the weights' scale can come from the step's maxima and the
  /// gradients' from their producers' row maxima.
  bool per_tensor_fp8() const { return fp8 && !block_scaled; }
};

/// The linear layers of a block, by what their input is.
enum class LinearRole {
  Qkv,     ///< input: the attention norm's output
  Out,     ///< input: the attention output (kept by attention itself)
  GateUp,  ///< input: the MLP norm's output
  Down,    ///< input: the SwiGLU output
};

struct PrecisionRecipe {
  std::string name = "bf16";           ///< bf16 | fp8 | fp8_block | coat (fp32 is the CPU reference: no FP8)
  bool fp8_linears = false;            ///< the blocks' linear layers run FP8 GEMMs
  bool block_scaled = false;           ///< with fp8_linears: 128-block scales (fp8_block) instead of per tensor
  bool compress_activations = false;   ///< coat's saved-activation compression
  bool compress_attention = false;     ///< every block's attention saves q, k, v and output as FP8 1x16 groups
  /// Per-tensor FP8 linears keep W^T's E4M3 codes beside W's from one optimizer step to the next (true), or
  /// make each in the backward from W's codes, one linear at a time (false: precision.cache_weight_transpose;
  /// 1 byte per FP8 weight less; fp8 and coat only, nn::Fp8Weights).
  bool keep_weight_transpose = true;
  std::vector<int64_t> bf16_layers;    ///< blocks kept in BF16, as indices in [0, layers), sorted, unique

  bool layer_in_bf16(int64_t layer) const;
  /// The recipe of linear `role` in block `layer`.
  LinearRecipe linear(int64_t layer, LinearRole role) const;
  /// Whether block `layer` saves its norm and SwiGLU inputs as FP8 1x16 groups.
  bool compresses(int64_t layer) const;
  /// Whether block `layer`'s attention keeps its q, k, v (compress_attention) and its output (compress_attention
  /// where the o projection keeps its own FP8 input: a BF16 o projection keeps the BF16 output anyway) as FP8
  /// 1x16 groups.
  bool compresses_attention_qkv(int64_t layer) const;
  bool compresses_attention_out(int64_t layer) const;
};

/// The first of `num_layers` blocks whose q/k/v projection is 128-block scaled, or -1: train.recompute = qkv
/// cannot make q, k and v again there (the projection keeps its input as 1x128 groups along the tokens, not
/// the forward's groups along the features).
int64_t first_block_scaled_qkv(const PrecisionRecipe& recipe, int64_t num_layers);

/// The recipe `kind` for a model of `num_layers` blocks; bf16_layers may count from the end (-1 is the last
/// block). Throws InvalidArgument naming precision.bf16_layers for a layer out of range.
PrecisionRecipe make_recipe(RecipeKind kind, const std::vector<int64_t>& bf16_layers, int64_t num_layers);
/// The recipe named `name` (fp32 | bf16 | fp8 | fp8_block | coat); throws InvalidArgument naming
/// precision.recipe for an unknown name.
PrecisionRecipe make_recipe(const std::string& name, const std::vector<int64_t>& bf16_layers, int64_t num_layers);

}  // namespace coat::models
