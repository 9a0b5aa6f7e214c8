// A decoder-only transformer of the Llama or OLMo family, built from nn functions. It runs the forward (and
// records it for the backward) over the parameters of its UnitStore (models/unit_store.h: the flat units,
// their compute copies, gradients and FP8 weight caches), calling the per-unit hooks (unit_hooks.h) at each
// unit's boundaries.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "coat/autograd/tape.h"
#include "coat/core/context.h"
#include "coat/core/random_generator.h"
#include "coat/models/model_config.h"
#include "coat/models/precision_recipe.h"
#include "coat/models/recompute.h"
#include "coat/models/unit_hooks.h"
#include "coat/models/unit_store.h"
#include "coat/nn/grad_row_maxima.h"
#include "coat/nn/loss.h"
#include "coat/nn/output_remake.h"
#include "coat/ops/quantize.h"

namespace coat::models {


/// Choices fixed when the model allocates (so that nothing is allocated twice).
struct TransformerOptions {
  /// The recipe of the first forwards (set_recipe may change it). Under an FP8 recipe the blocks whose
  /// linears all run FP8 get no BF16 copy of their matrices: the FP8 copies are quantised from the masters.
  PrecisionRecipe recipe{};
  /// Every block unit's gradient views ONE buffer (StoreOptions::share_block_grads): only for a caller that
  /// consumes each block's gradients in UnitHooks::after_backward (the optimizer applied during the backward).
  bool share_block_grads = false;
  /// Shard the parameters over ranks (StoreOptions::shard): the forward then needs hooks that gather each unit
  /// before its use (dist::FsdpUnits).
  std::optional<ShardSpec> shard;
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
  DType dtype() const { return store_->dtype(); }
  DType compute_dtype() const { return store_->compute_dtype(); }
  const ContextPtr& context() const { return store_->context(); }
  /// The parameters the forward runs over.
  UnitStore& store() { return *store_; }
  const UnitStore& store() const { return *store_; }

  /// Applies to the forwards that follow (with gradients on; a forward-only tape keeps nothing anyway).
  /// Recompute::Qkv needs every block's q/k/v projection per tensor scaled or BF16 (check_recompute).
  void set_recompute(Recompute recompute);
  Recompute recompute() const { return recompute_; }
  /// Fused producers (default on): under the per-tensor FP8 recipes (fp8, coat) the norms and the SwiGLU write
  /// the row maxima their FP8 linears take the scales from (no amax pass), and under coat the block's residual
  /// add makes the MLP norm's compressed input; in the backward the SwiGLU and the inverse RoPE write the row
  /// maxima of the gradients the gate/up and q/k/v linears quantise. Off: every op on its own. Both give the
  /// same bytes.
  void set_fused_producers(bool on) { fused_producers_ = on; }
  /// How often a linear's backward found its output gradient's maxima from the producer (hits) or made its
  /// own amax pass (misses), over every backward since construction.
  const nn::GradRowMaximaCounts& grad_maxima_counts() const { return *grad_maxima_counts_; }
  /// The precision recipe of the forwards that follow (models/precision_recipe.h; default bf16: no FP8). FP8
  /// recipes need a BF16 compute dtype.
  /// Allocates or frees the BF16 copies of block matrices as the recipe needs them (TransformerOptions).
  void set_recipe(PrecisionRecipe recipe);
  const PrecisionRecipe& recipe() const { return recipe_; }
  /// The hooks every following forward (with gradients) calls at its units' boundaries (unit_hooks.h); not
  /// owned; nullptr: none.
  void set_unit_hooks(UnitHooks* hooks) { hooks_ = hooks; }

  // The store's most used parts, for brevity (models/unit_store.h says what they do).
  void init(uint64_t seed) { store_->init(seed, config_.initializer_range); }
  std::vector<nn::Parameter>& parameters() { return store_->parameters(); }
  const std::vector<nn::Parameter>& parameters() const { return store_->parameters(); }
  nn::Parameter& parameter(const std::string& name) { return store_->parameter(name); }
  std::vector<ParamUnit>& units() { return store_->units(); }
  const std::vector<ParamUnit>& units() const { return store_->units(); }
  void zero_grad(bool defer_linear = false) { store_->zero_grad(defer_linear); }
  void finish_grads() { store_->finish_grads(); }
  void weights_changed() { store_->weights_changed(); }
  void sync_compute_weights() { store_->sync_compute_weights(); }

  /// Loss of next-token prediction: ids and targets [B, T] (I32), grad_scale as in nn::cross_entropy.
  /// Records onto the tape (a tape with gradients off runs forward only).
  nn::LossOutput forward(autograd::Tape& tape, const Tensor& ids, const Tensor& targets, int64_t ignore_index,
                         double grad_scale);
  /// Logits [B, T, V] for ids [B, T], forward only.
  Tensor logits(const Tensor& ids);
  /// The gradient row-maxima slots a block shares with its neighbours (fused producers): `input`, where its
  /// input norm's backward puts the maxima of the block input's gradient, which the block below's down linear
  /// takes; `output`, which its own down linear takes (put by the block above). Either may be null.
  struct BoundaryMaxima {
    nn::GradRowMaximaSlot input, output;
  };
  /// Block `layer` applied to x [batch, seq, hidden] (compute dtype), recorded on the tape under the recipe
  /// (the block benchmark times this alone; no unit hooks).
  autograd::Var block(autograd::Tape& tape, int64_t layer, const autograd::Var& x, int64_t batch, int64_t seq,
                      const BoundaryMaxima& boundary = {});

 private:
  /// The final hidden states [B, T, hidden] after the final norm, with every unit's hooks but the head's
  /// after_forward (the caller's head linear still uses it).
  autograd::Var hidden_states(autograd::Tape& tape, const Tensor& ids);
  /// The block's norm (RMSNorm with `weight`, or OLMo's LayerNorm without); compressed_x and out_row_maxima
  /// as in nn::rms_norm.
  autograd::Var norm(autograd::Tape& tape, const autograd::Var& x, std::optional<size_t> weight, bool compress = false,
                     const ops::Fp8PerGroup* compressed_x = nullptr, Tensor* out_row_maxima = nullptr,
                     nn::GradRowMaximaSlot dx_maxima = nullptr);
  /// Whether the linear of `role` in block `layer` takes row maxima from its producers (fused producers on,
  /// a per-tensor FP8 linear under the recipe).
  bool takes_row_maxima(int64_t layer, LinearRole role) const;
  /// A slot counted in grad_maxima_counts() when the linear takes maxima, else null.
  nn::GradRowMaximaSlot maxima_slot(int64_t layer, LinearRole role) const;
  /// A block linear under the recipe: BF16 or FP8 GEMMs.
  /// remake: as nn::linear_fp8's (not for a 128-block-scaled linear).
  autograd::Var block_linear(autograd::Tape& tape, const autograd::Var& x, nn::Parameter& weight, int64_t layer,
                             LinearRole role, nn::OutputRemake* remake = nullptr);
  /// The recipe needs BF16 compute for FP8 linears, and its bf16_layers must be blocks of the model.
  void check_recipe(const PrecisionRecipe& recipe, DType compute_dtype) const;
  /// Recompute::Qkv makes q, k and v again from the q/k/v projection's saved input: not where that input is
  /// kept in 1x128 groups along the tokens (fp8_block), which are not the forward's groups.
  void check_recompute(const PrecisionRecipe& recipe, Recompute recompute) const;
  /// Whether unit `u` needs a full compute copy under the recipe.
  bool needs_full_copy(const ParamUnit& u) const;
  /// ParamUnit::fp8_per_tensor of every unit, from the recipe.
  void mark_per_tensor_units();
  /// The head's matrix [V, hidden] applied to the final hidden states, then the unit hooks' ends.
  autograd::Var head_logits(autograd::Tape& tape, const autograd::Var& x);
  /// Calls hooks_->before_forward(unit) now and records the tape hook for after_backward(unit) (the
  /// backward reaches it after every later node's backward: the unit's gradients are complete).
  void enter_unit(autograd::Tape& tape, size_t unit);
  /// Calls hooks_->after_forward(unit) now and records the tape hook for before_backward(unit).
  void leave_unit(autograd::Tape& tape, size_t unit);

  ModelConfig config_;
  std::vector<double> rope_inv_freq_;  ///< config_.rope_inverse_frequencies(), computed once
  std::unique_ptr<UnitStore> store_;
  UnitHooks* hooks_ = nullptr;
  Recompute recompute_ = Recompute::None;
  bool fused_producers_ = true;
  std::shared_ptr<nn::GradRowMaximaCounts> grad_maxima_counts_ = std::make_shared<nn::GradRowMaximaCounts>();
  PrecisionRecipe recipe_;
};

}  // namespace coat::models
