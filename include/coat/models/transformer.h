// A decoder-only transformer of the Llama or OLMo family, built from nn functions.
// Parameters live in flat units (ARCHITECTURE.md, idea 2): unit "embed" (embed_tokens), one unit per
// block ("layers.i"), and unit "head" (final norm weight and lm_head, when they exist). Each unit has one
// flat value buffer and one flat gradient buffer; named parameters (HF's names) are views into them.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "coat/autograd/tape.h"
#include "coat/core/context.h"
#include "coat/core/random_generator.h"
#include "coat/models/model_config.h"
#include "coat/models/precision_recipe.h"
#include "coat/models/recompute.h"
#include "coat/models/unit_layout.h"
#include "coat/nn/fp8_block_weights.h"
#include "coat/nn/fp8_weights.h"
#include "coat/nn/loss.h"
#include "coat/nn/parameter.h"
#include "coat/ops/quantize.h"

namespace coat::models {

struct ParamUnit {
  std::string name;
  int64_t layer = -1;  ///< the block of a "layers.<i>" unit; -1 for "embed" and "head"
  Tensor value;   ///< flat [numel] in the compute dtype (MemoryCategory::Weights); undefined when the unit has
                  ///< no full compute copy (a block whose linears all run FP8: its matrices are quantised from
                  ///< the masters, and only its vectors get compute copies, listed in `loose`)
  Tensor master;  ///< flat [numel] in the master dtype (MemoryCategory::MasterWeights); == value when the
                  ///< two dtypes are the same
  Tensor grad;    ///< flat [numel] in the master dtype (MemoryCategory::Gradients); undefined without gradients
  std::vector<size_t> params;  ///< indices into Transformer::parameters()
  std::vector<size_t> loose;   ///< parameters with their own compute copy (when `value` is undefined)
};

/// The projections a block multiplies by as one matrix each (one GEMM instead of three, and of two): views
/// over the block unit's value, master and grad buffers spanning q_proj, k_proj, v_proj as [h + 2 kv, h] and
/// gate_proj, up_proj as [2 F, h], which the unit lays out without padding between them (unit_layout.h).
/// Not in parameters(): the optimizer, checkpoints, init and HF export see only the HF names.
struct FusedProjections {
  nn::Parameter qkv;      ///< "model.layers.<i>.self_attn.qkv_proj.weight"
  nn::Parameter gate_up;  ///< "model.layers.<i>.mlp.gate_up_proj.weight"
};

/// Choices fixed when the model allocates (so that nothing is allocated twice).
struct TransformerOptions {
  /// The recipe of the first forwards (set_recipe may change it). Under an FP8 recipe the blocks whose
  /// linears all run FP8 get no BF16 copy of their matrices: the FP8 copies are quantised from the masters.
  PrecisionRecipe recipe{};
  /// Every block unit's gradient views ONE buffer (the blocks' units have one layout). Only for a caller
  /// that consumes each block's gradients as soon as its backward ends (set_grads_ready_hook): the optimizer
  /// applied during the backward. The gradient memory is then that of one block, the embedding and the head.
  bool share_block_grads = false;
};

class Transformer {
 public:
  /// Allocates parameters (zero; call init or load) on the context's device: master weights and gradients
  /// in `dtype` (F32, or F64 for gradient checks), and, when `compute_dtype` differs (BF16 mixed
  /// precision), a compute copy that the forward and backward use (refresh it with sync_compute_weights
  /// after the masters change). Gradient buffers only when `with_grads`.
  Transformer(ModelConfig config, ContextPtr context, DType dtype = DType::F32, bool with_grads = true,
              std::optional<DType> compute_dtype = std::nullopt, TransformerOptions options = {});

  const ModelConfig& config() const { return config_; }
  DType dtype() const { return dtype_; }
  DType compute_dtype() const { return compute_dtype_; }
  /// Copies the master weights into the compute copies (round to nearest even), one pass per unit.
  void sync_compute_weights();
  /// Whether block units share one gradient buffer (TransformerOptions::share_block_grads).
  bool shares_block_grads() const { return share_block_grads_; }
  const ContextPtr& context() const { return context_; }
  /// Applies to the forwards that follow (with gradients on; a forward-only tape keeps nothing anyway).
  void set_recompute(Recompute recompute) { recompute_ = recompute; }
  /// Fused producers (default on): under the per-tensor FP8 recipes (fp8, coat) the norms and the SwiGLU write
  /// the row maxima their FP8 linears take the scales from (no amax pass), and under coat the block's residual
  /// add makes the MLP norm's compressed input. Off: every op on its own. Both give the same bytes.
  void set_fused_producers(bool on) { fused_producers_ = on; }
  /// The precision recipe of the forwards that follow (models/precision_recipe.h; default bf16: no FP8). FP8
  /// recipes need a BF16 compute dtype.
  /// Allocates or frees the BF16 copies of block matrices as the recipe needs them (TransformerOptions).
  void set_recipe(PrecisionRecipe recipe);
  const PrecisionRecipe& recipe() const { return recipe_; }
  /// Tells the model its master weights changed (after an optimizer step or a load): the FP8 weight copies
  /// are made again at their next use, and the compute copies of the units without a full one (`loose`, which
  /// the optimizer does not refresh) are copied again. sync_compute_weights calls it.
  void weights_changed();
  /// The FP8 weight copies (FP8 recipes).
  const nn::Fp8Weights& fp8_weights() const { return fp8_weights_; }
  /// The 128-block-scaled FP8 weight copies (the fp8_block recipe).
  const nn::Fp8BlockWeights& fp8_block_weights() const { return fp8_block_weights_; }
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
  /// zero_grad and finish_grads for unit `unit` alone (the optimizer applied during the backward: a shared
  /// block gradient buffer is zeroed again for the next block once the optimizer has read it).
  void zero_unit_grad(size_t unit, bool defer_linear);
  void finish_unit_grads(size_t unit);
  /// Called during the backward of every forward that follows (with gradients) when unit `unit`'s gradients
  /// are complete: a block's after its backward, the head's after the final norm's, the embedding's at the
  /// end. Empty: none.
  void set_grads_ready_hook(std::function<void(size_t unit)> hook) { grads_ready_ = std::move(hook); }

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
  /// The block's norm (RMSNorm with weight, or OLMo's LayerNorm); compressed_x and out_row_maxima as in
  /// nn::rms_norm.
  autograd::Var norm(autograd::Tape& tape, const autograd::Var& x, const std::string& weight_name,
                     bool compress = false, const ops::Fp8PerGroup* compressed_x = nullptr,
                     Tensor* out_row_maxima = nullptr);
  /// A block linear under the recipe: BF16 or FP8 GEMMs.
  autograd::Var block_linear(autograd::Tape& tape, const autograd::Var& x, nn::Parameter& weight, int64_t layer,
                             LinearRole role);
  void add_unit(const UnitLayout& layout);
  void check_recipe(const PrecisionRecipe& recipe) const;
  /// Gives each unit the compute copies the recipe needs (full, or its vectors only) and views them.
  void layout_compute_copies();
  /// Whether unit `u` needs a full compute copy under the recipe.
  bool needs_full_copy(const ParamUnit& u) const;
  /// Records a tape hook that calls grads_ready_ for unit `unit` when the backward reaches it.
  void grads_ready_at(autograd::Tape& tape, const std::string& name, size_t unit);

  ModelConfig config_;
  ContextPtr context_;
  DType dtype_;
  DType compute_dtype_;
  bool with_grads_;
  bool share_block_grads_ = false;
  Tensor shared_block_grad_;  ///< the block units' one gradient buffer (share_block_grads)
  std::function<void(size_t)> grads_ready_;
  Recompute recompute_ = Recompute::None;
  bool fused_producers_ = true;
  PrecisionRecipe recipe_;
  nn::Fp8Weights fp8_weights_;
  nn::Fp8BlockWeights fp8_block_weights_;
  std::vector<nn::Parameter> params_;
  std::map<std::string, size_t> index_;
  std::vector<ParamUnit> units_;
  std::optional<size_t> embed_unit_, head_unit_;  ///< indices into units_, where the model has them
  std::vector<size_t> layer_units_;               ///< per block, its unit's index
  std::vector<FusedProjections> fused_;  ///< one per block
  /// The parameters whose gradients zero_grad defers (linear-only weights, as the linears see them: fused
  /// projections, o_proj, down_proj, an untied LM head), and the views of the unit gradients it fills: the
  /// rest of each unit, padding included.
  std::vector<std::vector<nn::Parameter*>> deferred_grads_;  ///< per unit
  std::vector<std::vector<Tensor>> filled_grads_;            ///< per unit
  bool deferral_planned_ = false;
  void plan_deferral();
};

}  // namespace coat::models
