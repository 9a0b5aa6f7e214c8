#include "coat/models/transformer.h"

#include <algorithm>
#include <cmath>

#include "coat/core/nvtx.h"
#include "coat/nn/activation.h"
#include "coat/nn/checkpoint.h"
#include "coat/nn/embedding.h"
#include "coat/nn/linear.h"
#include "coat/nn/linear_fp8_block.h"
#include "coat/nn/norm.h"
#include "coat/nn/packed_attention.h"
#include "coat/nn/residual.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"

namespace coat::models {

namespace {

/// One parameter viewing `parts` (2-D, one column count, consecutive in one unit without padding between
/// them) as one matrix [sum of rows, cols] over the same value, master and grad buffers.
nn::Parameter fuse(const std::string& name, const std::vector<const nn::Parameter*>& parts) {
  const nn::Parameter& first = *parts.front();
  const int64_t cols = first.master.size(1);
  int64_t rows = 0;
  for (const nn::Parameter* part : parts) {
    for (const auto& [t, f] : {std::pair{&part->value, &first.value},
                               {&part->master, &first.master},
                               {&part->grad, &first.grad}}) {
      if (!f->defined()) continue;
      COAT_CHECK(t->dim() == 2 && t->size(1) == cols && t->is_contiguous() && t->shares_storage_with(*f) &&
                     t->offset() == f->offset() + rows * cols,
                 Error, "[Transformer] cannot fuse '", part->name, "' into '", name,
                 "': it does not directly follow the previous part in its unit (unit_layout.h)");
    }
    rows += part->master.size(0);
  }
  auto view = [&](const Tensor& t) {
    return t.defined() ? Tensor::from_storage(t.storage(), {rows, cols}, t.dtype(), t.offset()) : Tensor();
  };
  nn::Parameter fused;
  fused.name = name;
  fused.value = view(first.value);
  fused.master = view(first.master);
  fused.grad = view(first.grad);
  fused.decay = first.decay;
  return fused;
}

}  // namespace

Transformer::Transformer(ModelConfig config, ContextPtr context, DType dtype, bool with_grads,
                         std::optional<DType> compute_dtype, TransformerOptions options)
    : config_(std::move(config)),
      context_(std::move(context)),
      dtype_(dtype),
      compute_dtype_(compute_dtype.value_or(dtype)),
      with_grads_(with_grads),
      share_block_grads_(with_grads && options.share_block_grads) {
  COAT_ARG_CHECK(compute_dtype_ == dtype_ || compute_dtype_ == DType::BF16 || compute_dtype_ == DType::F16, "Transformer",
                 "compute dtype must be the master dtype, bf16 or f16, got ", dtype_name(compute_dtype_));
  config_.validate();
  COAT_ARG_CHECK(dtype == DType::F32 || dtype == DType::F64, "Transformer", "parameter dtype must be f32 or f64, got ",
                 dtype_name(dtype));
  for (const UnitLayout& layout : unit_layouts(config_)) add_unit(layout);
  check_recipe(options.recipe);
  recipe_ = std::move(options.recipe);
  layout_compute_copies();
}

void Transformer::layout_compute_copies() {
  const bool mixed = compute_dtype_ != dtype_;
  for (ParamUnit& u : units_) {
    const bool full = !mixed || needs_full_copy(u);
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
  fused_.clear();
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    fused_.push_back({fuse(p + "self_attn.qkv_proj.weight", {&parameter(p + "self_attn.q_proj.weight"),
                                                             &parameter(p + "self_attn.k_proj.weight"),
                                                             &parameter(p + "self_attn.v_proj.weight")}),
                      fuse(p + "mlp.gate_up_proj.weight",
                           {&parameter(p + "mlp.gate_proj.weight"), &parameter(p + "mlp.up_proj.weight")})});
  }
  deferral_planned_ = false;  // the fused views are new
}

bool Transformer::needs_full_copy(const ParamUnit& u) const {
  if (u.layer < 0) return true;
  for (LinearRole role : {LinearRole::Qkv, LinearRole::Out, LinearRole::GateUp, LinearRole::Down})
    if (!recipe_.linear(u.layer, role).fp8) return true;
  return false;
}

void Transformer::add_unit(const UnitLayout& layout) {
  const int64_t total = layout.numel;
  const auto& shapes = layout.params;
  const auto& offsets = layout.offsets;
  ParamUnit unit;
  unit.name = layout.name;
  if (unit.name.rfind("layers.", 0) == 0) unit.layer = std::stoll(unit.name.substr(7));
  // Zeroed: the alignment padding between parameters stays zero for good.
  const bool mixed = compute_dtype_ != dtype_;
  unit.master = ops::zeros(context_, {total}, dtype_, mixed ? MemoryCategory::MasterWeights : MemoryCategory::Weights);
  if (with_grads_ && share_block_grads_ && unit.layer >= 0) {
    if (!shared_block_grad_.defined()) shared_block_grad_ = ops::zeros(context_, {total}, dtype_, MemoryCategory::Gradients);
    COAT_CHECK(shared_block_grad_.numel() == total, Error, "[Transformer] block units differ in size (",
               shared_block_grad_.numel(), " and ", total, "): they cannot share one gradient buffer");
    unit.grad = shared_block_grad_;
  } else if (with_grads_) {
    unit.grad = ops::zeros(context_, {total}, dtype_, MemoryCategory::Gradients);
  }
  for (size_t i = 0; i < shapes.size(); ++i) {
    const auto& [pname, shape] = shapes[i];
    const int64_t n = shape_numel(shape);
    nn::Parameter p;
    p.name = pname;
    p.master = unit.master.slice(0, offsets[i], offsets[i] + n).reshape(shape);
    if (with_grads_) p.grad = unit.grad.slice(0, offsets[i], offsets[i] + n).reshape(shape);
    p.decay = shape.size() == 2;
    index_[pname] = params_.size();
    unit.params.push_back(params_.size());
    params_.push_back(std::move(p));
  }
  if (unit.layer >= 0) {
    COAT_CHECK(unit.layer == static_cast<int64_t>(layer_units_.size()), Error, "[Transformer] unit '", unit.name,
               "' out of block order");
    layer_units_.push_back(units_.size());
  } else if (unit.name == "embed") {
    embed_unit_ = units_.size();
  } else if (unit.name == "head") {
    head_unit_ = units_.size();
  }
  units_.push_back(std::move(unit));
}

nn::Parameter& Transformer::parameter(const std::string& name) {
  auto it = index_.find(name);
  if (it == index_.end()) throw InvalidArgument(detail::concat("model has no parameter '", name, "'"));
  return params_[it->second];
}

void Transformer::init(uint64_t seed) {
  RandomGenerator gen{seed, 0};
  for (nn::Parameter& p : params_) {
    if (p.master.dim() == 1) {
      ops::fill_(p.master, 1.0);
    } else {
      ops::normal_(p.master, gen, 0.0f, static_cast<float>(config_.initializer_range));
    }
  }
  sync_compute_weights();
}

void Transformer::check_recipe(const PrecisionRecipe& recipe) const {
  COAT_ARG_CHECK(!recipe.fp8_linears || compute_dtype_ == DType::BF16, "Transformer", "the ", recipe.name,
                 " recipe computes in BF16; the model's compute dtype is ", dtype_name(compute_dtype_));
  for (int64_t layer : recipe.bf16_layers)
    COAT_ARG_CHECK(layer >= 0 && layer < config_.num_hidden_layers, "Transformer", "bf16 layer ", layer,
                   " out of range");
}

void Transformer::set_recipe(PrecisionRecipe recipe) {
  check_recipe(recipe);
  recipe_ = std::move(recipe);
  layout_compute_copies();
  weights_changed();
}

void Transformer::weights_changed() {
  fp8_weights_.invalidate();
  fp8_block_weights_.invalidate();
  for (ParamUnit& u : units_)
    for (size_t index : u.loose) ops::copy_(params_[index].value, params_[index].master);
}

void Transformer::sync_compute_weights() {
  weights_changed();
  if (compute_dtype_ == dtype_) return;
  for (ParamUnit& u : units_)
    if (u.value.defined()) ops::copy_(u.value, u.master);
}

void Transformer::plan_deferral() {
  if (deferral_planned_) return;
  deferred_grads_.assign(units_.size(), {});
  filled_grads_.assign(units_.size(), {});
  for (size_t k = 0; k < units_.size(); ++k) {
    ParamUnit& u = units_[k];
    if (!u.grad.defined()) continue;
    std::vector<nn::Parameter*>& deferred = deferred_grads_[k];
    if (u.layer >= 0) {
      const std::string p = "model.layers." + std::to_string(u.layer) + ".";
      FusedProjections& f = fused_[static_cast<size_t>(u.layer)];
      deferred = {&f.qkv, &f.gate_up, &parameter(p + "self_attn.o_proj.weight"), &parameter(p + "mlp.down_proj.weight")};
    } else if (!config_.tie_word_embeddings && index_.contains("lm_head.weight") &&
               std::find(u.params.begin(), u.params.end(), index_.at("lm_head.weight")) != u.params.end()) {
      deferred = {&parameter("lm_head.weight")};
    }
    // The element ranges the deferred gradients cover; everything else (padding included) gets filled.
    std::vector<std::pair<int64_t, int64_t>> covered;
    for (const nn::Parameter* p : deferred)
      covered.emplace_back(p->grad.offset() - u.grad.offset(), p->grad.offset() - u.grad.offset() + p->grad.numel());
    std::sort(covered.begin(), covered.end());
    int64_t at = 0;
    for (const auto& [begin, end] : covered) {
      if (begin > at) filled_grads_[k].push_back(u.grad.slice(0, at, begin));
      at = std::max(at, end);
    }
    if (at < u.grad.numel()) filled_grads_[k].push_back(u.grad.slice(0, at, u.grad.numel()));
  }
  deferral_planned_ = true;
}

void Transformer::zero_unit_grad(size_t unit, bool defer_linear) {
  ParamUnit& u = units_.at(unit);
  if (!u.grad.defined()) return;
  plan_deferral();
  if (!defer_linear) {
    ops::fill_(u.grad, 0.0);
    for (nn::Parameter* p : deferred_grads_[unit]) p->grad_unset = false;
    return;
  }
  for (Tensor& g : filled_grads_[unit]) ops::fill_(g, 0.0);
  for (nn::Parameter* p : deferred_grads_[unit]) p->grad_unset = true;
}

void Transformer::zero_grad(bool defer_linear) {
  for (size_t k = 0; k < units_.size(); ++k) zero_unit_grad(k, defer_linear);
}

void Transformer::finish_unit_grads(size_t unit) {
  if (!deferral_planned_) return;  // nothing was deferred
  for (nn::Parameter* p : deferred_grads_.at(unit)) {
    if (p->grad_unset) ops::fill_(p->grad, 0.0);
    p->grad_unset = false;
  }
}

void Transformer::finish_grads() {
  for (size_t k = 0; k < units_.size(); ++k) finish_unit_grads(k);
}

void Transformer::grads_ready_at(autograd::Tape& tape, const std::string& name, size_t unit) {
  tape.hook(name, [this, unit] {
    if (grads_ready_) grads_ready_(unit);
  });
}

autograd::Var Transformer::norm(autograd::Tape& tape, const autograd::Var& x, const std::string& weight_name,
                                bool compress, const ops::Fp8PerGroup* compressed_x, Tensor* out_row_maxima) {
  if (config_.norms_have_weights())
    return nn::rms_norm(tape, x, &parameter(weight_name), config_.rms_norm_eps, compress, compressed_x,
                        out_row_maxima);
  return nn::layer_norm(tape, x, 1e-5, compress, compressed_x, out_row_maxima);
}

autograd::Var Transformer::block_linear(autograd::Tape& tape, const autograd::Var& x, nn::Parameter& weight,
                                        int64_t layer, LinearRole role) {
  const LinearRecipe r = recipe_.linear(layer, role);
  if (!r.fp8) return nn::linear(tape, x, weight);
  if (r.block_scaled) return nn::linear_fp8_block(tape, x, weight, fp8_block_weights_);
  return nn::linear_fp8(tape, x, weight, fp8_weights_, r.save_fp8_input);
}

autograd::Var Transformer::block(autograd::Tape& tape, int64_t layer, const autograd::Var& x, int64_t batch, int64_t seq) {
  const std::string p = "model.layers." + std::to_string(layer) + ".";
  const int64_t hq = config_.num_attention_heads, hkv = config_.num_key_value_heads, dh = config_.head_dim();
  COAT_ARG_CHECK(x.shape() == Shape({batch, seq, config_.hidden_size}), "Transformer", "block ", layer,
                 " input ", shape_str(x.shape()),
                 " is not [batch, seq, hidden] = ", shape_str({batch, seq, config_.hidden_size}));
  FusedProjections& fused = fused_.at(static_cast<size_t>(layer));
  const bool compress = recipe_.compresses(layer);  // COAT: norm and SwiGLU inputs kept as FP8 1x16 groups
  // Fused producers (set_fused_producers). A per-tensor FP8 linear takes its input's scale from the row maxima
  // that the norm or SwiGLU before it wrote (COAT's group scaling; the same bytes as its own amax pass);
  // o_proj's input comes from attention, which writes none. Under coat the residual add h also makes the MLP
  // norm's compressed input. The block's last add would make the next block's input-norm copy: a block takes
  // only its input Var (and under recomputation restarts from it), so the input norm compresses x itself.
  const auto takes_maxima = [&](LinearRole role) {
    const LinearRecipe r = recipe_.linear(layer, role);
    return fused_producers_ && r.fp8 && !r.block_scaled;
  };
  // block_linear, except that an input with row maxima goes to the per-tensor FP8 linear with them (moved in:
  // freed once its scale is made).
  const auto linear = [&](const autograd::Var& in, nn::Parameter& weight, LinearRole role, Tensor in_maxima) {
    if (!in_maxima.defined()) return block_linear(tape, in, weight, layer, role);
    return nn::linear_fp8(tape, in, weight, fp8_weights_, recipe_.linear(layer, role).save_fp8_input,
                          std::move(in_maxima));
  };
  Tensor a_maxima, m_maxima, s_maxima;  // row maxima of the qkv, gate/up and down inputs
  autograd::Var a = norm(tape, x, p + "input_layernorm.weight", compress, nullptr,
                         takes_maxima(LinearRole::Qkv) ? &a_maxima : nullptr);
  // One GEMM for q, k and v: [B, T, (Hq + 2 Hkv) * Dh]; RoPE and attention work on it in place.
  autograd::Var qkv = linear(a, fused.qkv, LinearRole::Qkv, std::move(a_maxima));
  autograd::Var o = nn::packed_attention(tape, qkv, hq, hkv, dh, config_.rope_theta,
                                         1.0 / std::sqrt(static_cast<double>(dh)));
  ops::Fp8PerGroup h_compressed;  // coat: the MLP norm's saved input, made by the add
  autograd::Var h =
      nn::add(tape, x, block_linear(tape, o, parameter(p + "self_attn.o_proj.weight"), layer, LinearRole::Out),
              fused_producers_ && compress ? &h_compressed : nullptr);
  autograd::Var m = norm(tape, h, p + "post_attention_layernorm.weight", compress, &h_compressed,
                         takes_maxima(LinearRole::GateUp) ? &m_maxima : nullptr);
  // One GEMM for gate and up: [B, T, 2F].
  autograd::Var gu = linear(m, fused.gate_up, LinearRole::GateUp, std::move(m_maxima));
  autograd::Var s = nn::swiglu_packed(tape, gu, compress, takes_maxima(LinearRole::Down) ? &s_maxima : nullptr);
  autograd::Var d = linear(s, parameter(p + "mlp.down_proj.weight"), LinearRole::Down, std::move(s_maxima));
  return nn::add(tape, h, d);
}

autograd::Var Transformer::hidden_states(autograd::Tape& tape, const Tensor& ids) {
  COAT_ARG_CHECK(ids.dim() == 2, "Transformer", "token ids must be [batch, seq], got ", shape_str(ids.shape()));
  const int64_t batch = ids.size(0), seq = ids.size(1);
  COAT_ARG_CHECK(seq <= config_.max_position_embeddings, "Transformer", "sequence length ", seq,
                 " exceeds model.max_position_embeddings = ", config_.max_position_embeddings);
  // Each unit's gradients are complete when the backward reaches the point before the unit's first use.
  if (embed_unit_) grads_ready_at(tape, "embed", *embed_unit_);
  autograd::Var x = nn::embedding(tape, parameter("model.embed_tokens.weight"), ids);
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    const NvtxRange block_range("block", i);
    grads_ready_at(tape, "block " + std::to_string(i), layer_units_.at(static_cast<size_t>(i)));
    if (recompute_ == Recompute::Blocks) {
      // One tape node per block that keeps only the block's input; the backward runs the block again.
      x = nn::checkpoint(
          tape, x,
          [this, i, batch, seq](autograd::Tape& t, const autograd::Var& in) { return block(t, i, in, batch, seq); },
          with_grads_);
    } else {
      x = block(tape, i, x, batch, seq);
    }
  }
  if (head_unit_) grads_ready_at(tape, "head", *head_unit_);
  return norm(tape, x, "model.norm.weight");
}

nn::LossOutput Transformer::forward(autograd::Tape& tape, const Tensor& ids, const Tensor& targets, int64_t ignore_index,
                                    double grad_scale) {
  autograd::Var x = hidden_states(tape, ids);
  nn::Parameter& head = config_.tie_word_embeddings ? parameter("model.embed_tokens.weight") : parameter("lm_head.weight");
  autograd::Var logits = nn::linear(tape, x, head);
  return nn::cross_entropy(tape, logits, targets, ignore_index, grad_scale, tape.grad_enabled());
}

Tensor Transformer::logits(const Tensor& ids) {
  autograd::Tape tape(/*grad_enabled=*/false);
  autograd::Var x = hidden_states(tape, ids);
  nn::Parameter& head = config_.tie_word_embeddings ? parameter("model.embed_tokens.weight") : parameter("lm_head.weight");
  return nn::linear(tape, x, head).value;
}

}  // namespace coat::models
