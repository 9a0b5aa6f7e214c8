#include "coat/models/transformer.h"

#include <cmath>

#include "coat/nn/activation.h"
#include "coat/nn/attention.h"
#include "coat/nn/embedding.h"
#include "coat/nn/linear.h"
#include "coat/nn/norm.h"
#include "coat/nn/residual.h"
#include "coat/nn/rope.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"

namespace coat::models {

namespace {
constexpr int64_t kAlignElements = 64;  // parameters start on 256-byte boundaries in F32 units
int64_t align_up(int64_t n) { return (n + kAlignElements - 1) / kAlignElements * kAlignElements; }
}  // namespace

Transformer::Transformer(ModelConfig config, ContextPtr context, DType dtype, bool with_grads,
                         std::optional<DType> compute_dtype)
    : config_(std::move(config)),
      context_(std::move(context)),
      dtype_(dtype),
      compute_dtype_(compute_dtype.value_or(dtype)),
      with_grads_(with_grads) {
  COAT_ARG_CHECK(compute_dtype_ == dtype_ || compute_dtype_ == DType::BF16 || compute_dtype_ == DType::F16, "Transformer",
                 "compute dtype must be the master dtype, bf16 or f16, got ", dtype_name(compute_dtype_));
  config_.validate();
  COAT_ARG_CHECK(dtype == DType::F32 || dtype == DType::F64, "Transformer", "parameter dtype must be f32 or f64, got ",
                 dtype_name(dtype));
  const int64_t h = config_.hidden_size, kv = config_.num_key_value_heads * config_.head_dim();
  const int64_t ffn = config_.intermediate_size, vocab = config_.vocab_size;
  add_unit("embed", {{"model.embed_tokens.weight", {vocab, h}}});
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    std::vector<std::pair<std::string, Shape>> shapes = {
        {p + "self_attn.q_proj.weight", {h, h}},   {p + "self_attn.k_proj.weight", {kv, h}},
        {p + "self_attn.v_proj.weight", {kv, h}},  {p + "self_attn.o_proj.weight", {h, h}},
        {p + "mlp.gate_proj.weight", {ffn, h}},    {p + "mlp.up_proj.weight", {ffn, h}},
        {p + "mlp.down_proj.weight", {h, ffn}}};
    if (config_.norms_have_weights()) {
      shapes.push_back({p + "input_layernorm.weight", {h}});
      shapes.push_back({p + "post_attention_layernorm.weight", {h}});
    }
    add_unit("layers." + std::to_string(i), shapes);
  }
  std::vector<std::pair<std::string, Shape>> head;
  if (config_.norms_have_weights()) head.push_back({"model.norm.weight", {h}});
  if (!config_.tie_word_embeddings) head.push_back({"lm_head.weight", {vocab, h}});
  if (!head.empty()) add_unit("head", head);
}

void Transformer::add_unit(const std::string& name, const std::vector<std::pair<std::string, Shape>>& shapes) {
  int64_t total = 0;
  std::vector<int64_t> offsets;
  for (const auto& [pname, shape] : shapes) {
    offsets.push_back(total);
    total += align_up(shape_numel(shape));
  }
  ParamUnit unit;
  unit.name = name;
  // Zeroed: the alignment padding between parameters stays zero for good.
  const bool mixed = compute_dtype_ != dtype_;
  unit.master = ops::zeros(context_, {total}, dtype_, mixed ? MemoryCategory::MasterWeights : MemoryCategory::Weights);
  unit.value = mixed ? ops::zeros(context_, {total}, compute_dtype_, MemoryCategory::Weights) : unit.master;
  if (with_grads_) unit.grad = ops::zeros(context_, {total}, dtype_, MemoryCategory::Gradients);
  for (size_t i = 0; i < shapes.size(); ++i) {
    const auto& [pname, shape] = shapes[i];
    const int64_t n = shape_numel(shape);
    nn::Parameter p;
    p.name = pname;
    p.value = unit.value.slice(0, offsets[i], offsets[i] + n).reshape(shape);
    p.master = unit.master.slice(0, offsets[i], offsets[i] + n).reshape(shape);
    if (with_grads_) p.grad = unit.grad.slice(0, offsets[i], offsets[i] + n).reshape(shape);
    p.decay = shape.size() == 2;
    index_[pname] = params_.size();
    unit.params.push_back(params_.size());
    params_.push_back(std::move(p));
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

void Transformer::sync_compute_weights() {
  if (compute_dtype_ == dtype_) return;
  for (ParamUnit& u : units_) ops::copy_(u.value, u.master);
}

void Transformer::zero_grad() {
  for (ParamUnit& u : units_) {
    if (u.grad.defined()) ops::fill_(u.grad, 0.0);
  }
}

autograd::Var Transformer::norm(autograd::Tape& tape, const autograd::Var& x, const std::string& weight_name) {
  if (config_.norms_have_weights()) return nn::rms_norm(tape, x, &parameter(weight_name), config_.rms_norm_eps);
  return nn::layer_norm(tape, x, 1e-5);
}

autograd::Var Transformer::block(autograd::Tape& tape, int64_t layer, const autograd::Var& x, int64_t batch, int64_t seq) {
  const std::string p = "model.layers." + std::to_string(layer) + ".";
  const int64_t hq = config_.num_attention_heads, hkv = config_.num_key_value_heads, dh = config_.head_dim();
  autograd::Var a = norm(tape, x, p + "input_layernorm.weight");
  autograd::Var q = nn::reshape(tape, nn::linear(tape, a, parameter(p + "self_attn.q_proj.weight")), {batch, seq, hq, dh});
  autograd::Var k = nn::reshape(tape, nn::linear(tape, a, parameter(p + "self_attn.k_proj.weight")), {batch, seq, hkv, dh});
  autograd::Var v = nn::reshape(tape, nn::linear(tape, a, parameter(p + "self_attn.v_proj.weight")), {batch, seq, hkv, dh});
  q = nn::rope(tape, q, config_.rope_theta);
  k = nn::rope(tape, k, config_.rope_theta);
  autograd::Var o = nn::attention(tape, q, k, v, 1.0 / std::sqrt(static_cast<double>(dh)));
  o = nn::reshape(tape, o, {batch, seq, hq * dh});
  autograd::Var h = nn::add(tape, x, nn::linear(tape, o, parameter(p + "self_attn.o_proj.weight")));
  autograd::Var m = norm(tape, h, p + "post_attention_layernorm.weight");
  autograd::Var g = nn::linear(tape, m, parameter(p + "mlp.gate_proj.weight"));
  autograd::Var u = nn::linear(tape, m, parameter(p + "mlp.up_proj.weight"));
  autograd::Var d = nn::linear(tape, nn::swiglu(tape, g, u), parameter(p + "mlp.down_proj.weight"));
  return nn::add(tape, h, d);
}

autograd::Var Transformer::hidden_states(autograd::Tape& tape, const Tensor& ids) {
  COAT_ARG_CHECK(ids.dim() == 2, "Transformer", "token ids must be [batch, seq], got ", shape_str(ids.shape()));
  const int64_t batch = ids.size(0), seq = ids.size(1);
  COAT_ARG_CHECK(seq <= config_.max_position_embeddings, "Transformer", "sequence length ", seq,
                 " exceeds model.max_position_embeddings = ", config_.max_position_embeddings);
  autograd::Var x = nn::embedding(tape, parameter("model.embed_tokens.weight"), ids);
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    tape.hook("block " + std::to_string(i), [] {});
    x = block(tape, i, x, batch, seq);
  }
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
