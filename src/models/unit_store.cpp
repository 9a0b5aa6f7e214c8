// The flat parameter units of a model: allocation, compute copies, fused projection views, gradient zeroing.
#include "coat/models/unit_store.h"

#include <algorithm>

#include "coat/core/random_generator.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/quantized_moment.h"

namespace coat::models {

namespace {

/// Makes `fused` view `parts` (2-D, one column count, consecutive in one unit without padding between them)
/// as one matrix [sum of rows, cols] over the same value, master and grad buffers, where the parts have them.
/// In place: the tape's closures hold references to the fused parameters.
void fuse_into(nn::Parameter& fused, const std::vector<const nn::Parameter*>& parts) {
  for (Tensor nn::Parameter::*field : {&nn::Parameter::value, &nn::Parameter::master, &nn::Parameter::grad}) {
    const Tensor& first = parts.front()->*field;
    if (!first.defined()) {
      fused.*field = Tensor();
      continue;
    }
    const int64_t cols = first.size(1);
    int64_t rows = 0;
    for (const nn::Parameter* part : parts) {
      const Tensor& t = part->*field;
      COAT_CHECK(t.defined() && t.dim() == 2 && t.size(1) == cols && t.is_contiguous() &&
                     t.shares_storage_with(first) && t.offset() == first.offset() + rows * cols,
                 Error, "[UnitStore] cannot fuse '", part->name, "' into '", fused.name,
                 "': it does not directly follow the previous part in its unit (unit_layout.h)");
      rows += t.size(0);
    }
    fused.*field = Tensor::from_storage(first.storage(), {rows, cols}, first.dtype(), first.offset());
  }
  fused.decay = parts.front()->decay;
  fused.trainable = parts.front()->trainable;
}

std::string block_prefix(int64_t layer) { return "model.layers." + std::to_string(layer) + "."; }

}  // namespace

UnitStore::UnitStore(const ModelConfig& config, ContextPtr context, StoreOptions options)
    : context_(std::move(context)),
      dtype_(options.dtype),
      compute_dtype_(options.compute_dtype.value_or(options.dtype)),
      with_grads_(options.with_grads),
      share_block_grads_(options.with_grads && options.share_block_grads),
      tie_word_embeddings_(config.tie_word_embeddings),
      layers_(config.num_hidden_layers),
      shard_(options.shard) {
  COAT_ARG_CHECK(dtype_ == DType::F32 || dtype_ == DType::F64, "UnitStore", "parameter dtype must be f32 or f64, got ",
                 dtype_name(dtype_));
  COAT_ARG_CHECK(compute_dtype_ == dtype_ || compute_dtype_ == DType::BF16 || compute_dtype_ == DType::F16,
                 "UnitStore", "compute dtype must be the master dtype, bf16 or f16, got ", dtype_name(compute_dtype_));
  COAT_ARG_CHECK(!shard_ || !share_block_grads_, "UnitStore",
                 "a sharded store cannot share one gradient buffer between blocks");
  layouts_ = unit_layouts(config);
  for (const UnitLayout& layout : layouts_) add_unit(layout);
  fp8_weights_.resize(units_.size());
  fp8_block_weights_.resize(units_.size());
  deferred_grads_.assign(units_.size(), {});
  filled_grads_.assign(units_.size(), {});
  deferral_planned_.assign(units_.size(), false);
  resolve_indices(config);
  layout_compute_copies(options.full_copy ? options.full_copy : [](const ParamUnit&) { return true; });
}

void UnitStore::add_unit(const UnitLayout& layout) {
  const int64_t total = layout.numel;
  ParamUnit unit;
  unit.name = layout.name;
  if (unit.name.rfind("layers.", 0) == 0) unit.layer = std::stoll(unit.name.substr(7));
  const bool mixed = compute_dtype_ != dtype_;
  const MemoryCategory master_category = mixed ? MemoryCategory::MasterWeights : MemoryCategory::Weights;
  if (shard_) {
    // This rank's slices only; the padding past the unit's end stays zero for good.
    unit.shard = UnitShard::of(total, *shard_);
    unit.master = ops::zeros(context_, {unit.shard.shard_numel}, dtype_, master_category);
    unit.compute_shard = mixed ? ops::zeros(context_, {unit.shard.shard_numel}, compute_dtype_, MemoryCategory::Weights)
                               : unit.master;
    if (with_grads_) unit.grad_shard = ops::zeros(context_, {unit.shard.shard_numel}, dtype_, MemoryCategory::Gradients);
  } else {
    unit.shard = UnitShard::of(total, ShardSpec{0, 1, 1});
    // Zeroed: the alignment padding between parameters stays zero for good.
    unit.master = ops::zeros(context_, {total}, dtype_, master_category);
    if (with_grads_ && share_block_grads_ && unit.layer >= 0) {
      if (!shared_block_grad_.defined()) shared_block_grad_ = ops::zeros(context_, {total}, dtype_, MemoryCategory::Gradients);
      COAT_CHECK(shared_block_grad_.numel() == total, Error, "[UnitStore] block units differ in size (",
                 shared_block_grad_.numel(), " and ", total, "): they cannot share one gradient buffer");
      unit.grad = shared_block_grad_;
    } else if (with_grads_) {
      unit.grad = ops::zeros(context_, {total}, dtype_, MemoryCategory::Gradients);
    }
  }
  for (size_t i = 0; i < layout.params.size(); ++i) {
    const auto& [pname, shape] = layout.params[i];
    nn::Parameter p;
    p.name = pname;
    p.decay = shape.size() == 2;
    p.trainable = with_grads_;
    index_[pname] = params_.size();
    unit.params.push_back(params_.size());
    params_.push_back(std::move(p));
  }
  if (unit.layer >= 0) {
    COAT_CHECK(unit.layer == static_cast<int64_t>(layer_units_.size()), Error, "[UnitStore] unit '", unit.name,
               "' out of block order");
    layer_units_.push_back(units_.size());
  } else if (unit.name == "embed") {
    embed_unit_ = units_.size();
  } else if (unit.name == "head") {
    head_unit_ = units_.size();
  }
  units_.push_back(std::move(unit));
  view_unit(units_.size() - 1);
}

void UnitStore::view_unit(size_t k) {
  ParamUnit& u = units_[k];
  const UnitLayout& layout = layouts_[k];
  const auto view = [&](const Tensor& flat, size_t i) {
    const int64_t n = shape_numel(layout.params[i].second);
    return flat.defined() ? flat.slice(0, layout.offsets[i], layout.offsets[i] + n).reshape(layout.params[i].second)
                          : Tensor();
  };
  for (size_t i = 0; i < u.params.size(); ++i) {
    nn::Parameter& p = params_[u.params[i]];
    if (!shard_) p.master = view(u.master, i);
    p.grad = view(u.grad, i);
    if (shard_) p.value = view(u.value, i);  // unsharded: layout_compute_copies says what each value views
  }
  if (shard_ && !u.value.defined() && u.loose_value.defined()) {
    int64_t at = 0;
    for (size_t index : u.loose) {
      nn::Parameter& p = params_[index];
      const Shape& shape = param_shape(k, index);
      p.value = u.loose_value.slice(0, at, at + shape_numel(shape)).reshape(shape);
      at += shape_numel(shape);
    }
  }
  if (u.layer >= 0 && static_cast<size_t>(u.layer) < fused_.size()) refresh_fused_views(u.layer);
  if (k < deferral_planned_.size()) deferral_planned_[k] = false;
}

void UnitStore::resolve_indices(const ModelConfig& config) {
  const auto optional_index = [this](const std::string& name) -> std::optional<size_t> {
    if (!index_.contains(name)) return std::nullopt;
    return index_.at(name);
  };
  for (int64_t i = 0; i < layers_; ++i) {
    const std::string p = block_prefix(i);
    BlockParams b;
    if (config.norms_have_weights()) {
      b.input_norm = index_.at(p + "input_layernorm.weight");
      b.post_norm = index_.at(p + "post_attention_layernorm.weight");
    }
    b.o_proj = index_.at(p + "self_attn.o_proj.weight");
    b.down_proj = index_.at(p + "mlp.down_proj.weight");
    blocks_.push_back(b);
  }
  outer_.embed = index_.at("model.embed_tokens.weight");
  outer_.head = tie_word_embeddings_ ? outer_.embed : index_.at("lm_head.weight");
  outer_.final_norm = optional_index("model.norm.weight");
}

nn::Parameter& UnitStore::parameter(const std::string& name) {
  auto it = index_.find(name);
  if (it == index_.end()) throw InvalidArgument(detail::concat("model has no parameter '", name, "'"));
  return params_[it->second];
}

void UnitStore::init(uint64_t seed, double initializer_range) {
  // Draws from Philox in parameter order, unit after unit, over each whole unit: a sharded rank makes the
  // whole unit too (the draws of one process) and keeps its slice.
  RandomGenerator gen{seed, 0};
  for (size_t k = 0; k < units_.size(); ++k) {
    ParamUnit& u = units_[k];
    const UnitLayout& layout = layouts_[k];
    Tensor whole = shard_ ? ops::zeros(context_, {u.shard.padded_numel()}, dtype_, MemoryCategory::Workspace)
                          : u.master;
    for (size_t i = 0; i < layout.params.size(); ++i) {
      const Shape& shape = layout.params[i].second;
      Tensor p = whole.slice(0, layout.offsets[i], layout.offsets[i] + shape_numel(shape));
      if (shape.size() == 1) {
        ops::fill_(p, 1.0);
      } else {
        ops::normal_(p, gen, 0.0f, static_cast<float>(initializer_range));
      }
    }
    if (shard_) ops::copy_(u.master, whole.slice(0, u.shard.begin, u.shard.begin + u.shard.shard_numel));
  }
  sync_compute_weights();
}

void UnitStore::layout_compute_copies(const std::function<bool(const ParamUnit&)>& full_copy) {
  const bool mixed = compute_dtype_ != dtype_;
  if (shard_) {
    // A sharded unit is gathered whole in the compute dtype, or (fp8_linears) as FP8 codes and its vectors.
    for (size_t k = 0; k < units_.size(); ++k) {
      ParamUnit& u = units_[k];
      u.fp8_linears = mixed && !full_copy(u);
      u.loose.clear();
      if (!u.fp8_linears) continue;
      for (size_t index : u.params)
        if (param_shape(k, index).size() == 1) u.loose.push_back(index);
    }
    make_fused_views();
    return;
  }
  for (size_t k = 0; k < units_.size(); ++k) {
    ParamUnit& u = units_[k];
    const bool full = !mixed || full_copy(u);
    u.fp8_linears = !full;
    const bool has_full = u.value.defined();
    const bool laid_out = has_full || !u.loose.empty();
    if (laid_out && full == has_full) continue;
    u.loose.clear();
    if (full) {
      u.value = mixed ? ops::zeros(context_, {u.master.numel()}, compute_dtype_, MemoryCategory::Weights) : u.master;
      if (mixed) ops::copy_(u.value, u.master);  // the padding too (zero)
    } else {
      u.value = Tensor();
    }
    for (size_t index : u.params) {
      nn::Parameter& p = params_[index];
      if (full) {
        p.value = u.value.slice(0, p.master.offset() - u.master.offset(),
                                p.master.offset() - u.master.offset() + p.master.numel())
                      .reshape(p.master.shape());
      } else if (p.master.dim() == 1) {
        // A norm weight: its own compute copy, refreshed by weights_changed.
        p.value = ops::zeros(context_, p.master.shape(), compute_dtype_, MemoryCategory::Weights);
        ops::copy_(p.value, p.master);
        u.loose.push_back(index);
      } else {
        p.value = Tensor();  // quantised to FP8 from the master (nn::Fp8Weights)
      }
    }
  }
  make_fused_views();
}

void UnitStore::make_fused_views() {
  // The FP8 caches are keyed by the parameters they quantise: the fused views are new objects.
  for (size_t k = 0; k < units_.size(); ++k) release_fp8_weights(k);
  fused_.assign(static_cast<size_t>(layers_), {});
  for (int64_t i = 0; i < layers_; ++i) {
    const std::string p = block_prefix(i);
    fused_[static_cast<size_t>(i)].qkv.name = p + "self_attn.qkv_proj.weight";
    fused_[static_cast<size_t>(i)].gate_up.name = p + "mlp.gate_up_proj.weight";
    refresh_fused_views(i);
  }
  deferral_planned_.assign(units_.size(), false);  // the fused views are new
}

void UnitStore::refresh_fused_views(int64_t layer) {
  const std::string p = block_prefix(layer);
  FusedProjections& f = fused_.at(static_cast<size_t>(layer));
  fuse_into(f.qkv, {&parameter(p + "self_attn.q_proj.weight"), &parameter(p + "self_attn.k_proj.weight"),
                    &parameter(p + "self_attn.v_proj.weight")});
  fuse_into(f.gate_up, {&parameter(p + "mlp.gate_proj.weight"), &parameter(p + "mlp.up_proj.weight")});
}

void UnitStore::bind_value(size_t unit, const Tensor& whole) {
  ParamUnit& u = units_.at(unit);
  COAT_ARG_CHECK(shard_.has_value(), "UnitStore", "bind_value: unit '", u.name, "' is not sharded");
  COAT_ARG_CHECK(whole.dim() == 1 && whole.numel() >= u.shard.numel && whole.dtype() == compute_dtype_, "UnitStore",
                 "bind_value: unit '", u.name, "' needs ", u.shard.numel, " elements of ", dtype_name(compute_dtype_),
                 ", got ", shape_str(whole.shape()), " of ", dtype_name(whole.dtype()));
  u.value = whole.slice(0, 0, u.shard.numel);
  view_unit(unit);
}

void UnitStore::bind_grad(size_t unit, const Tensor& whole) {
  ParamUnit& u = units_.at(unit);
  COAT_ARG_CHECK(shard_.has_value() && with_grads_, "UnitStore", "bind_grad: unit '", u.name,
                 "' is not a sharded unit with gradients");
  COAT_ARG_CHECK(whole.dim() == 1 && whole.numel() >= u.shard.numel && whole.dtype() == dtype_, "UnitStore",
                 "bind_grad: unit '", u.name, "' needs ", u.shard.numel, " elements of ", dtype_name(dtype_), ", got ",
                 shape_str(whole.shape()), " of ", dtype_name(whole.dtype()));
  u.grad = whole.slice(0, 0, u.shard.numel);
  view_unit(unit);
}

size_t UnitStore::position_in_unit(size_t unit, size_t index) const {
  const ParamUnit& u = units_.at(unit);
  const auto at = std::find(u.params.begin(), u.params.end(), index);
  COAT_CHECK(at != u.params.end(), Error, "[UnitStore] parameter ", index, " is not in unit '", u.name, "'");
  return static_cast<size_t>(at - u.params.begin());
}

const Shape& UnitStore::param_shape(size_t unit, size_t index) const {
  return layouts_.at(unit).params.at(position_in_unit(unit, index)).second;
}

int64_t UnitStore::param_offset(size_t unit, size_t index) const {
  return layouts_.at(unit).offsets.at(position_in_unit(unit, index));
}

std::vector<Fp8Operand> UnitStore::fp8_operands(size_t unit) {
  const ParamUnit& u = units_.at(unit);
  if (u.layer < 0) return {};
  FusedProjections& f = fused_.at(static_cast<size_t>(u.layer));
  const BlockParams& b = blocks_.at(static_cast<size_t>(u.layer));
  const std::string prefix = block_prefix(u.layer);
  const auto operand = [&](nn::Parameter* key, size_t first, std::initializer_list<size_t> parts) {
    Fp8Operand op{key, param_offset(unit, first), 0, 0};
    for (size_t index : parts) {
      const Shape& s = param_shape(unit, index);
      op.rows += s.at(0);
      op.cols = s.at(1);
    }
    return op;
  };
  const size_t q = index_.at(prefix + "self_attn.q_proj.weight"), k = index_.at(prefix + "self_attn.k_proj.weight"),
               v = index_.at(prefix + "self_attn.v_proj.weight"), gate = index_.at(prefix + "mlp.gate_proj.weight"),
               up = index_.at(prefix + "mlp.up_proj.weight");
  return {operand(&f.qkv, q, {q, k, v}), operand(&params_[b.o_proj], b.o_proj, {b.o_proj}),
          operand(&f.gate_up, gate, {gate, up}), operand(&params_[b.down_proj], b.down_proj, {b.down_proj})};
}

void UnitStore::bind_loose(size_t unit, const Tensor& values) {
  ParamUnit& u = units_.at(unit);
  COAT_ARG_CHECK(shard_.has_value() && u.fp8_linears, "UnitStore", "bind_loose: unit '", u.name,
                 "' is not a sharded unit whose linears run FP8");
  int64_t total = 0;
  for (size_t index : u.loose) total += shape_numel(param_shape(unit, index));
  COAT_ARG_CHECK(values.dim() == 1 && values.numel() == total && values.dtype() == compute_dtype_, "UnitStore",
                 "bind_loose: unit '", u.name, "' needs ", total, " elements of ", dtype_name(compute_dtype_), ", got ",
                 shape_str(values.shape()), " of ", dtype_name(values.dtype()));
  u.value = Tensor();
  u.loose_value = values;
  view_unit(unit);
}

void UnitStore::release_value(size_t unit) {
  ParamUnit& u = units_.at(unit);
  if (!shard_ || (!u.value.defined() && !u.loose_value.defined())) return;
  u.value = Tensor();
  u.loose_value = Tensor();
  release_fp8_weights(unit);
  view_unit(unit);
}

void UnitStore::release_grad(size_t unit) {
  ParamUnit& u = units_.at(unit);
  if (!shard_ || !u.grad.defined()) return;
  u.grad = Tensor();
  view_unit(unit);
}

void UnitStore::weights_changed() {
  ++weights_version_;
  for (nn::Fp8Weights& w : fp8_weights_) w.invalidate();
  for (nn::Fp8BlockWeights& w : fp8_block_weights_) w.invalidate();
  if (shard_) return;  // a sharded unit's loose values are gathered (bind_loose), not kept
  for (ParamUnit& u : units_)
    for (size_t index : u.loose) ops::copy_(params_[index].value, params_[index].master);
}

void UnitStore::put_step_maxima(size_t unit, const Tensor& maxima) {
  const ParamUnit& u = units_.at(unit);
  if (shard_ || !u.fp8_linears) return;
  constexpr int64_t g = ops::kStepMaximaGranule;
  const int64_t count = ops::step_maxima_count(u.master.numel());
  COAT_ARG_CHECK(maxima.defined() && maxima.dim() == 1 && maxima.numel() == count, "UnitStore",
                 "put_step_maxima: unit '", u.name, "' of ", u.master.numel(), " elements needs ", count,
                 " maxima, got ", maxima.defined() ? maxima.str() : "undefined");
  for (const Fp8Operand& op : fp8_operands(unit)) {
    if (op.key->value.defined() || op.offset % g != 0 || op.numel() % g != 0) continue;
    fp8_weights_.at(unit).put_maxima(*op.key, maxima.slice(0, op.offset / g, (op.offset + op.numel()) / g));
  }
}

void UnitStore::sync_compute_weights() {
  weights_changed();
  if (compute_dtype_ == dtype_) return;
  for (ParamUnit& u : units_) {
    if (shard_) {
      ops::copy_(u.compute_shard, u.master);
    } else if (u.value.defined()) {
      ops::copy_(u.value, u.master);
    }
  }
}

void UnitStore::set_keep_fp8_transpose(bool keep) {
  for (nn::Fp8Weights& w : fp8_weights_) w.set_keep_transpose(keep);
}

void UnitStore::release_fp8_weights(size_t unit) {
  fp8_weights_.at(unit).release();
  fp8_block_weights_.at(unit).release();
}

int64_t UnitStore::fp8_quantizations() const {
  int64_t total = 0;
  for (const nn::Fp8Weights& w : fp8_weights_) total += w.quantizations();
  return total;
}

int64_t UnitStore::fp8_quantizations_from_maxima() const {
  int64_t total = 0;
  for (const nn::Fp8Weights& w : fp8_weights_) total += w.quantizations_from_maxima();
  return total;
}

int64_t UnitStore::fp8_block_quantizations() const {
  int64_t total = 0;
  for (const nn::Fp8BlockWeights& w : fp8_block_weights_) total += w.quantizations();
  return total;
}

void UnitStore::plan_deferral(size_t k) {
  if (deferral_planned_.at(k)) return;
  ParamUnit& u = units_[k];
  std::vector<nn::Parameter*>& deferred = deferred_grads_.at(k);
  std::vector<Tensor>& filled = filled_grads_.at(k);
  deferred.clear();
  filled.clear();
  if (!u.grad.defined()) return;
  if (u.layer >= 0) {
    FusedProjections& f = fused_[static_cast<size_t>(u.layer)];
    const BlockParams& b = blocks_[static_cast<size_t>(u.layer)];
    deferred = {&f.qkv, &f.gate_up, &params_[b.o_proj], &params_[b.down_proj]};
  } else if (!tie_word_embeddings_ && std::find(u.params.begin(), u.params.end(), outer_.head) != u.params.end()) {
    deferred = {&params_[outer_.head]};
  }
  // The element ranges the deferred gradients cover; everything else (padding included) gets filled.
  std::vector<std::pair<int64_t, int64_t>> covered;
  for (const nn::Parameter* p : deferred)
    covered.emplace_back(p->grad.offset() - u.grad.offset(), p->grad.offset() - u.grad.offset() + p->grad.numel());
  std::sort(covered.begin(), covered.end());
  int64_t at = 0;
  for (const auto& [begin, end] : covered) {
    if (begin > at) filled.push_back(u.grad.slice(0, at, begin));
    at = std::max(at, end);
  }
  if (at < u.grad.numel()) filled.push_back(u.grad.slice(0, at, u.grad.numel()));
  deferral_planned_[k] = true;
}

void UnitStore::zero_unit_grad(size_t unit, bool defer_linear) {
  ParamUnit& u = units_.at(unit);
  if (!u.grad.defined()) return;
  plan_deferral(unit);
  if (!defer_linear) {
    ops::fill_(u.grad, 0.0);
    for (nn::Parameter* p : deferred_grads_[unit]) p->grad_unset = false;
    return;
  }
  for (Tensor& g : filled_grads_[unit]) ops::fill_(g, 0.0);
  for (nn::Parameter* p : deferred_grads_[unit]) p->grad_unset = true;
}

void UnitStore::zero_grad(bool defer_linear) {
  for (size_t k = 0; k < units_.size(); ++k) {
    zero_unit_grad(k, defer_linear);
    if (units_[k].grad_shard.defined()) ops::fill_(units_[k].grad_shard, 0.0);
  }
}

void UnitStore::finish_unit_grads(size_t unit) {
  for (nn::Parameter* p : deferred_grads_.at(unit)) {
    if (p->grad_unset) ops::fill_(p->grad, 0.0);
    p->grad_unset = false;
  }
}

void UnitStore::finish_grads() {
  for (size_t k = 0; k < units_.size(); ++k) finish_unit_grads(k);
}

}  // namespace coat::models
