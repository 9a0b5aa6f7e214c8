// The storage of a model's parameters in flat units (ARCHITECTURE.md, idea 2), apart from the forward that
// uses them: unit "embed" (embed_tokens), one unit per block ("layers.i") and unit "head" (final norm weight
// and lm_head, when they exist). Each unit has one flat master buffer, one flat gradient buffer and, under
// mixed precision, a compute copy; named parameters (HF's names) are views into them. The store also owns
// what follows from that storage: the gradients' lifetime (zeroing, deferred zeroing of linear-only
// weights), the fused projection views of each block, the parameter indices of each block resolved once,
// and each unit's FP8 weight caches. models::Transformer runs the forward over whatever the store hands it.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "coat/core/context.h"
#include "coat/models/model_config.h"
#include "coat/models/unit_layout.h"
#include "coat/models/unit_shard.h"
#include "coat/nn/fp8_block_weights.h"
#include "coat/nn/fp8_weights.h"
#include "coat/nn/parameter.h"

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
  std::vector<size_t> params;  ///< indices into UnitStore::parameters()
  std::vector<size_t> loose;   ///< parameters with their own compute copy (when `value` is undefined)
  /// Sharded stores (StoreOptions::shard): `master` is this rank's slice [shard.shard_numel] (parameters have
  /// no master view), and `value` and `grad` are the whole unit only while bound (a gathered unit in use:
  /// bind_value / bind_grad), else undefined. Unsharded: the whole unit (begin 0, everything owned).
  UnitShard shard;
  Tensor compute_shard;  ///< sharded: this rank's slice of the compute copy (== master without mixed precision)
  Tensor grad_shard;     ///< sharded: this rank's slice of the gradient (reduced over ranks, summed over micro-batches)
  /// Every linear of this block runs FP8 under mixed precision (no full compute copy: its matrices are quantised
  /// from the masters, its vectors are `loose`). A sharded store can then gather the unit as FP8 codes
  /// (dist/fp8_gather.h): the matrices' copies go straight into the unit's FP8 cache, the vectors into
  /// `loose_value` (bind_loose).
  bool fp8_linears = false;
  /// Some linear of this block runs FP8 with a per-tensor scale (nn::Fp8Weights; set with the recipe): with
  /// fp8_linears, its weights' scales can come from the optimizer step's maxima (put_step_maxima).
  bool fp8_per_tensor = false;
  Tensor loose_value;  ///< sharded, while bound by bind_loose: the `loose` parameters' values, one after another
};

/// One matrix an FP8 linear layer multiplies by, as the unit's FP8 caches key it: a block's fused q/k/v and
/// gate/up projections, o_proj and down_proj. `offset` is its first element in the unit (it is contiguous).
struct Fp8Operand {
  nn::Parameter* key = nullptr;
  int64_t offset = 0;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t numel() const { return rows * cols; }
};

/// The projections a block multiplies by as one matrix each (one GEMM instead of three, and of two): views
/// over the block unit's value, master and grad buffers spanning q_proj, k_proj, v_proj as [h + 2 kv, h] and
/// gate_proj, up_proj as [2 F, h], which the unit lays out without padding between them (unit_layout.h).
/// Not in parameters(): the optimizer, checkpoints, init and HF export see only the HF names.
struct FusedProjections {
  nn::Parameter qkv;      ///< "model.layers.<i>.self_attn.qkv_proj.weight"
  nn::Parameter gate_up;  ///< "model.layers.<i>.mlp.gate_up_proj.weight"
};

/// A block's parameters as indices into UnitStore::parameters(), resolved once (no lookup by name in a forward).
struct BlockParams {
  std::optional<size_t> input_norm, post_norm;  ///< absent when the norms have no weights (OLMo)
  size_t o_proj = 0, down_proj = 0;
};

/// Which parameters the head and the embedding are (indices into UnitStore::parameters()).
struct OuterParams {
  size_t embed = 0;                     ///< model.embed_tokens.weight
  size_t head = 0;                      ///< the LM head's matrix: lm_head.weight, or embed when tied
  std::optional<size_t> final_norm;     ///< model.norm.weight (absent without norm weights)
};

/// Choices fixed when the store allocates.
struct StoreOptions {
  DType dtype = DType::F32;                ///< masters and gradients: F32, or F64 for gradient checks
  std::optional<DType> compute_dtype;      ///< the forward's copy (BF16 mixed precision); default: dtype
  bool with_grads = true;
  /// Every block unit's gradient views ONE buffer (the blocks' units have one layout). Only for a caller
  /// that consumes each block's gradients as soon as its backward ends (models::UnitHooks::after_backward):
  /// the optimizer applied during the backward. The gradient memory is then that of one block, the
  /// embedding and the head.
  bool share_block_grads = false;
  /// Whether a unit gets a full compute copy (mixed precision; see layout_compute_copies). Empty: every unit.
  std::function<bool(const ParamUnit&)> full_copy;
  /// Shard every unit over ranks (ParamUnit::shard): this rank keeps its slices of the masters, the compute
  /// copies and the gradients; whole units exist only while bound. Incompatible with share_block_grads.
  std::optional<ShardSpec> shard;
};

class UnitStore {
 public:
  /// Allocates every unit (zero; call init or load): masters and gradients in options.dtype and, when the
  /// compute dtype differs, compute copies as `layout_compute_copies` then says.
  UnitStore(const ModelConfig& config, ContextPtr context, StoreOptions options);
  UnitStore(const UnitStore&) = delete;  // parameters view the store's buffers and each other (fused views)
  UnitStore& operator=(const UnitStore&) = delete;

  const ContextPtr& context() const { return context_; }
  DType dtype() const { return dtype_; }
  DType compute_dtype() const { return compute_dtype_; }
  bool with_grads() const { return with_grads_; }
  bool shares_block_grads() const { return share_block_grads_; }
  const std::optional<ShardSpec>& sharding() const { return shard_; }

  std::vector<nn::Parameter>& parameters() { return params_; }
  const std::vector<nn::Parameter>& parameters() const { return params_; }
  nn::Parameter& parameter(size_t index) { return params_.at(index); }
  /// By HF name; InvalidArgument naming it when the model has none.
  nn::Parameter& parameter(const std::string& name);
  bool has_parameter(const std::string& name) const { return index_.contains(name); }
  std::vector<ParamUnit>& units() { return units_; }
  const std::vector<ParamUnit>& units() const { return units_; }
  /// Where unit `unit`'s parameters lie in it (names, shapes, offsets).
  const UnitLayout& layout(size_t unit) const { return layouts_.at(unit); }
  std::optional<size_t> embed_unit() const { return embed_unit_; }
  std::optional<size_t> head_unit() const { return head_unit_; }
  size_t layer_unit(int64_t layer) const { return layer_units_.at(static_cast<size_t>(layer)); }
  FusedProjections& fused_projections(int64_t layer) { return fused_.at(static_cast<size_t>(layer)); }
  const BlockParams& block_params(int64_t layer) const { return blocks_.at(static_cast<size_t>(layer)); }
  const OuterParams& outer_params() const { return outer_; }

  /// HF-style initialisation: matrices and embeddings ~ N(0, initializer_range), norm weights 1. Draws
  /// from Philox in parameter order, so a seed gives the same model on every device.
  void init(uint64_t seed, double initializer_range);

  /// Gives each unit the compute copies it needs: a full one where `full_copy(unit)`, else its vectors only
  /// (the matrices are then quantised from the masters). Mixed precision only; the fused views are made again.
  void layout_compute_copies(const std::function<bool(const ParamUnit&)>& full_copy);
  /// The master weights changed (an optimizer step, a load): the FP8 weight copies are made again at their
  /// next use, and the compute copies of the vectors of units without a full copy (`loose`, which the
  /// optimizer does not refresh) are copied again.
  void weights_changed();
  /// After weights_changed for an optimizer step that ran: `maxima` are unit `unit`'s step maxima (F32
  /// [ceil(numel / ops::kStepMaximaGranule)], ops::adamw_step_quantized). Each FP8 operand quantised from the
  /// masters that covers whole granules gets its slice of them (nn::Fp8Weights::put_maxima), so that its next
  /// quantisation makes no amax pass. Others (a compute copy, a partial granule, a sharded store) are skipped.
  void put_step_maxima(size_t unit, const Tensor& maxima);
  /// Copies the master weights into the compute copies (round to nearest even), one pass per unit, and
  /// calls weights_changed.
  void sync_compute_weights();

  /// Unit `unit`'s FP8 weight caches (per-tensor and 128x128-block scaled). release_fp8_weights frees a
  /// unit's copies (a sharded model's gathered unit after its use).
  nn::Fp8Weights& fp8_weights(size_t unit) { return fp8_weights_.at(unit); }
  nn::Fp8BlockWeights& fp8_block_weights(size_t unit) { return fp8_block_weights_.at(unit); }
  void release_fp8_weights(size_t unit);
  /// Whether the per-tensor FP8 caches keep W^T's codes (nn::Fp8Weights::set_keep_transpose); drops their copies.
  void set_keep_fp8_transpose(bool keep);
  /// The matrices a block unit's FP8 linears multiply by (empty for the embedding and head units).
  std::vector<Fp8Operand> fp8_operands(size_t unit);
  /// Parameter `index`'s shape and first element in unit `unit` (its layout).
  const Shape& param_shape(size_t unit, size_t index) const;
  int64_t param_offset(size_t unit, size_t index) const;
  /// Bumped by weights_changed: FP8 copies made from the weights of an earlier version are stale.
  int64_t weights_version() const { return weights_version_; }
  /// Over every unit: quantisations made so far (a test hook) and bytes held.
  int64_t fp8_quantizations() const;
  int64_t fp8_block_quantizations() const;
  /// Of fp8_quantizations, those whose scale came from the optimizer step's maxima (put_step_maxima).
  int64_t fp8_quantizations_from_maxima() const;

  /// Sharded stores: the whole unit's compute values (a gathered [numel] buffer, or longer: the rest is
  /// ignored) and gradient buffer while the unit is in use; the parameters and fused projections view them.
  /// bind_grad plans the unit's deferred zeroing anew (zero_unit_grad then initialises it). release drops the
  /// store's references (the memory goes when the caller's go too).
  void bind_value(size_t unit, const Tensor& whole);
  void bind_grad(size_t unit, const Tensor& whole);
  /// A unit gathered as FP8 codes (ParamUnit::fp8_linears): its loose parameters' values, one after another
  /// in `loose` order (BF16 [their total numel]); its matrices have no value (the FP8 cache holds them).
  void bind_loose(size_t unit, const Tensor& values);
  void release_value(size_t unit);
  void release_grad(size_t unit);

  /// Zeroes the gradients (and a sharded store's gradient slices). With `defer_linear`, those of weights that only the linear layers of the model's
  /// forward use (the fused block projections, o_proj, down_proj, an untied LM head) are not written: they are
  /// marked unset, and their first backward GEMM overwrites them (beta 0), which saves a fill and a read of 4
  /// bytes per parameter and step. Only for forwards through Transformer::forward (another path that uses the
  /// unfused q/k/v or gate/up parameters would add to stale values); call finish_grads after the backward.
  void zero_grad(bool defer_linear = false);
  /// Zeroes the gradients still unset after a backward (weights that got no gradient), so that every
  /// gradient buffer holds its value. Needed before anything reads the gradients.
  void finish_grads();
  /// zero_grad and finish_grads for unit `unit`'s whole gradient buffer alone (a shared block gradient buffer
  /// is zeroed again for the next block once the optimizer has read it; a sharded unit's bound buffer).
  void zero_unit_grad(size_t unit, bool defer_linear);
  void finish_unit_grads(size_t unit);

 private:
  void add_unit(const UnitLayout& layout);
  void make_fused_views();
  /// Block `layer`'s fused projections view its parameters' current buffers (updated in place: the tape's
  /// closures hold references to them).
  void refresh_fused_views(int64_t layer);
  /// Unit `unit`'s parameters view its current value and grad buffers.
  void view_unit(size_t unit);
  void resolve_indices(const ModelConfig& config);
  /// Where parameter `index` stands in unit `unit`'s layout (Error when it is not the unit's).
  size_t position_in_unit(size_t unit, size_t index) const;
  void plan_deferral(size_t unit);

  ContextPtr context_;
  DType dtype_;
  DType compute_dtype_;
  bool with_grads_;
  bool share_block_grads_ = false;
  bool tie_word_embeddings_ = false;
  int64_t layers_ = 0;
  Tensor shared_block_grad_;  ///< the block units' one gradient buffer (share_block_grads)
  std::vector<nn::Parameter> params_;
  std::map<std::string, size_t> index_;
  std::vector<ParamUnit> units_;
  std::optional<size_t> embed_unit_, head_unit_;  ///< indices into units_, where the model has them
  std::vector<size_t> layer_units_;               ///< per block, its unit's index
  std::vector<FusedProjections> fused_;           ///< per block
  std::vector<BlockParams> blocks_;               ///< per block
  OuterParams outer_;
  std::vector<nn::Fp8Weights> fp8_weights_;            ///< per unit
  std::vector<nn::Fp8BlockWeights> fp8_block_weights_;  ///< per unit
  /// The parameters whose gradients zero_grad defers (linear-only weights, as the linears see them: fused
  /// projections, o_proj, down_proj, an untied LM head), and the views of the unit gradients it fills: the
  /// rest of each unit, padding included.
  std::vector<std::vector<nn::Parameter*>> deferred_grads_;  ///< per unit
  std::vector<std::vector<Tensor>> filled_grads_;            ///< per unit
  std::vector<bool> deferral_planned_;                       ///< per unit
  std::optional<ShardSpec> shard_;
  std::vector<UnitLayout> layouts_;  ///< per unit
  int64_t weights_version_ = 0;
};

}  // namespace coat::models
