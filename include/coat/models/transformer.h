// A decoder-only transformer of the Llama or OLMo family, built from nn functions.
// Parameters live in flat units (ARCHITECTURE.md, idea 2): unit "embed" (embed_tokens), one unit per
// block ("layers.i"), and unit "head" (final norm weight and lm_head, when they exist). Each unit has one
// flat value buffer and one flat gradient buffer; named parameters (HF's names) are views into them.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "coat/autograd/tape.h"
#include "coat/core/context.h"
#include "coat/core/random_generator.h"
#include "coat/models/model_config.h"
#include "coat/models/precision_recipe.h"
#include "coat/models/unit_layout.h"
#include "coat/nn/fp8_weights.h"
#include "coat/nn/loss.h"
#include "coat/nn/parameter.h"

namespace coat::models {

struct ParamUnit {
  std::string name;
  Tensor value;   ///< flat [numel] in the compute dtype (MemoryCategory::Weights)
  Tensor master;  ///< flat [numel] in the master dtype (MemoryCategory::MasterWeights); == value when the
                  ///< two dtypes are the same
  Tensor grad;    ///< flat [numel] in the master dtype (MemoryCategory::Gradients); undefined without gradients
  std::vector<size_t> params;  ///< indices into Transformer::parameters()
};

/// The projections a block multiplies by as one matrix each (one GEMM instead of three, and of two): views
/// over the block unit's value, master and grad buffers spanning q_proj, k_proj, v_proj as [h + 2 kv, h] and
/// gate_proj, up_proj as [2 F, h], which the unit lays out without padding between them (unit_layout.h).
/// Not in parameters(): the optimizer, checkpoints, init and HF export see only the HF names.
struct FusedProjections {
  nn::Parameter qkv;      ///< "model.layers.<i>.self_attn.qkv_proj.weight"
  nn::Parameter gate_up;  ///< "model.layers.<i>.mlp.gate_up_proj.weight"
};

/// Activation recomputation: None keeps every block's activations for the backward; Blocks keeps only
/// each block's input and runs the block again in the backward (nn::checkpoint).
enum class Recompute { None, Blocks };

class Transformer {
 public:
  /// Allocates parameters (zero; call init or load) on the context's device: master weights and gradients
  /// in `dtype` (F32, or F64 for gradient checks), and, when `compute_dtype` differs (BF16 mixed
  /// precision), a compute copy that the forward and backward use (refresh it with sync_compute_weights
  /// after the masters change). Gradient buffers only when `with_grads`.
  Transformer(ModelConfig config, ContextPtr context, DType dtype = DType::F32, bool with_grads = true,
              std::optional<DType> compute_dtype = std::nullopt);

  const ModelConfig& config() const { return config_; }
  DType dtype() const { return dtype_; }
  DType compute_dtype() const { return compute_dtype_; }
  /// Copies the master weights into the compute copy (round to nearest even), one pass per unit.
  void sync_compute_weights();
  const ContextPtr& context() const { return context_; }
  /// Applies to the forwards that follow (with gradients on; a forward-only tape keeps nothing anyway).
  void set_recompute(Recompute recompute) { recompute_ = recompute; }
  /// The precision recipe of the forwards that follow (models/precision_recipe.h; default bf16: no FP8). FP8
  /// recipes need a BF16 compute dtype.
  void set_recipe(PrecisionRecipe recipe);
  const PrecisionRecipe& recipe() const { return recipe_; }
  /// Tells the model its weights changed (after an optimizer step or a load): the FP8 weight copies are made
  /// again at their next use. sync_compute_weights calls it.
  void weights_changed() { fp8_weights_.invalidate(); }
  /// The FP8 weight copies (FP8 recipes).
  const nn::Fp8Weights& fp8_weights() const { return fp8_weights_; }
  Recompute recompute() const { return recompute_; }

  /// HF-style initialisation: matrices and embeddings ~ N(0, initializer_range), norm weights 1. Draws
  /// from Philox in parameter order, so a seed gives the same model on every device.
  void init(uint64_t seed);

  std::vector<nn::Parameter>& parameters() { return params_; }
  const std::vector<nn::Parameter>& parameters() const { return params_; }
  nn::Parameter& parameter(const std::string& name);
  std::vector<ParamUnit>& units() { return units_; }
  const std::vector<ParamUnit>& units() const { return units_; }
  /// Block `layer`'s fused projections.
  const FusedProjections& fused_projections(int64_t layer) const {
    return fused_.at(static_cast<size_t>(layer));
  }
  /// Zeroes the gradients. With `defer_linear`, those of weights that only the linear layers of this model's
  /// forward use (the fused block projections, o_proj, down_proj, an untied LM head) are not written: they are
  /// marked unset, and their first backward GEMM overwrites them (beta 0), which saves a fill and a read of 4
  /// bytes per parameter and step. Only for forwards through forward() (another path that uses the unfused
  /// q/k/v or gate/up parameters would add to stale values); call finish_grads after the backward.
  void zero_grad(bool defer_linear = false);
  /// Zeroes the gradients still unset after a backward (weights that got no gradient), so that every
  /// gradient buffer holds its value. Needed before anything reads the gradients.
  void finish_grads();

  /// Loss of next-token prediction: ids and targets [B, T] (I32), grad_scale as in nn::cross_entropy.
  /// Records onto the tape (a tape with gradients off runs forward only).
  nn::LossOutput forward(autograd::Tape& tape, const Tensor& ids, const Tensor& targets, int64_t ignore_index,
                         double grad_scale);
  /// Logits [B, T, V] for ids [B, T], forward only.
  Tensor logits(const Tensor& ids);
  /// Block `layer` applied to x [batch, seq, hidden] (compute dtype), recorded on the tape under the recipe
  /// (the block benchmark times this alone).
  autograd::Var block(autograd::Tape& tape, int64_t layer, const autograd::Var& x, int64_t batch, int64_t seq);

 private:
  autograd::Var hidden_states(autograd::Tape& tape, const Tensor& ids);
  autograd::Var norm(autograd::Tape& tape, const autograd::Var& x, const std::string& weight_name,
                     bool compress = false);
  /// A block linear under the recipe: BF16 or FP8 GEMMs.
  autograd::Var block_linear(autograd::Tape& tape, const autograd::Var& x, nn::Parameter& weight, int64_t layer,
                             LinearRole role);
  void add_unit(const UnitLayout& layout);

  ModelConfig config_;
  ContextPtr context_;
  DType dtype_;
  DType compute_dtype_;
  bool with_grads_;
  Recompute recompute_ = Recompute::None;
  PrecisionRecipe recipe_;
  nn::Fp8Weights fp8_weights_;
  std::vector<nn::Parameter> params_;
  std::map<std::string, size_t> index_;
  std::vector<ParamUnit> units_;
  std::vector<FusedProjections> fused_;  ///< one per block
  /// The parameters whose gradients zero_grad defers (linear-only weights, as the linears see them: fused
  /// projections, o_proj, down_proj, an untied LM head), and the views of the unit gradients it fills: the
  /// rest of each unit, padding included.
  std::vector<nn::Parameter*> deferred_grads_;
  std::vector<Tensor> filled_grads_;
};

}  // namespace coat::models
