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

Transformer::Transformer(ModelConfig config, ContextPtr context, DType dtype, bool with_grads,
                         std::optional<DType> compute_dtype, TransformerOptions options)
    : config_(std::move(config)), recipe_(std::move(options.recipe)) {
  config_.validate();
  rope_inv_freq_ = config_.rope_inverse_frequencies();
  StoreOptions store;
  store.dtype = dtype;
  store.compute_dtype = compute_dtype;
  store.with_grads = with_grads;
  store.share_block_grads = options.share_block_grads;
  store.shard = options.shard;
  // The recipe is checked against the compute dtype before anything is allocated for it.
  check_recipe(recipe_, compute_dtype.value_or(dtype));
  store.full_copy = [this](const ParamUnit& u) { return needs_full_copy(u); };
  store_ = std::make_unique<UnitStore>(config_, std::move(context), std::move(store));
  mark_per_tensor_units();
  store_->set_keep_fp8_transpose(recipe_.keep_weight_transpose);
}

void Transformer::mark_per_tensor_units() {
  for (ParamUnit& u : store_->units()) {
    u.fp8_per_tensor = false;
    if (u.layer < 0) continue;
    for (LinearRole role : {LinearRole::Qkv, LinearRole::Out, LinearRole::GateUp, LinearRole::Down}) {
      const LinearRecipe r = recipe_.linear(u.layer, role);
      u.fp8_per_tensor = u.fp8_per_tensor || r.per_tensor_fp8();
    }
  }
}

bool Transformer::needs_full_copy(const ParamUnit& u) const {
  if (u.layer < 0) return true;
  for (LinearRole role : {LinearRole::Qkv, LinearRole::Out, LinearRole::GateUp, LinearRole::Down})
    if (!recipe_.linear(u.layer, role).fp8) return true;
  return false;
}

void Transformer::check_recipe(const PrecisionRecipe& recipe, DType compute_dtype) const {
  COAT_ARG_CHECK(!recipe.fp8_linears || compute_dtype == DType::BF16, "Transformer", "the ", recipe.name,
                 " recipe computes in BF16; the model's compute dtype is ", dtype_name(compute_dtype));
  for (int64_t layer : recipe.bf16_layers)
    COAT_ARG_CHECK(layer >= 0 && layer < config_.num_hidden_layers, "Transformer", "bf16 layer ", layer,
                   " out of range");
  COAT_ARG_CHECK(recipe.keep_weight_transpose || !recipe.block_scaled, "Transformer", "the ", recipe.name,
                 " recipe keeps its weights' transposed 128x128 blocks; making W^T in the backward "
                 "(precision.cache_weight_transpose = false) applies to the per-tensor FP8 recipes, fp8 and coat");
}

void Transformer::check_recompute(const PrecisionRecipe& recipe, Recompute recompute) const {
  if (recompute != Recompute::Qkv) return;
  const int64_t layer = first_block_scaled_qkv(recipe, config_.num_hidden_layers);
  COAT_ARG_CHECK(layer < 0, "Transformer",
                 "train.recompute = qkv makes q, k and v again from the input the q/k/v projection keeps, but "
                 "under the ", recipe.name, " recipe block ", layer, " keeps it as 1x128 groups along the tokens, "
                 "not the forward's groups; use train.recompute = none or blocks");
}

void Transformer::set_recompute(Recompute recompute) {
  check_recompute(recipe_, recompute);
  recompute_ = recompute;
}

void Transformer::set_recipe(PrecisionRecipe recipe) {
  check_recipe(recipe, store_->compute_dtype());
  check_recompute(recipe, recompute_);
  recipe_ = std::move(recipe);
  store_->layout_compute_copies([this](const ParamUnit& u) { return needs_full_copy(u); });
  mark_per_tensor_units();
  store_->set_keep_fp8_transpose(recipe_.keep_weight_transpose);
  store_->weights_changed();
}

void Transformer::enter_unit(autograd::Tape& tape, size_t unit) {
  if (!hooks_) return;
  hooks_->before_forward(unit);
  tape.hook("unit " + std::to_string(unit) + " done", [this, unit] {
    if (hooks_) hooks_->after_backward(unit);
  });
}

void Transformer::leave_unit(autograd::Tape& tape, size_t unit) {
  if (!hooks_) return;
  hooks_->after_forward(unit);
  tape.hook("unit " + std::to_string(unit) + " begins", [this, unit] {
    if (hooks_) hooks_->before_backward(unit);
  });
}

autograd::Var Transformer::norm(autograd::Tape& tape, const autograd::Var& x, std::optional<size_t> weight,
                                bool compress, const ops::Fp8PerGroup* compressed_x, Tensor* out_row_maxima,
                                nn::GradRowMaximaSlot dx_maxima) {
  const nn::NormFusion fusion{fused_producers_, fused_producers_, std::move(dx_maxima)};
  if (weight)
    return nn::rms_norm(tape, x, &store_->parameter(*weight), config_.rms_norm_eps, compress, compressed_x,
                        out_row_maxima, fusion);
  return nn::layer_norm(tape, x, 1e-5, compress, compressed_x, out_row_maxima, fusion);
}

bool Transformer::takes_row_maxima(int64_t layer, LinearRole role) const {
  const LinearRecipe r = recipe_.linear(layer, role);
  return fused_producers_ && r.per_tensor_fp8();
}

nn::GradRowMaximaSlot Transformer::maxima_slot(int64_t layer, LinearRole role) const {
  return takes_row_maxima(layer, role) ? std::make_shared<nn::GradRowMaxima>(grad_maxima_counts_) : nullptr;
}

autograd::Var Transformer::block_linear(autograd::Tape& tape, const autograd::Var& x, nn::Parameter& weight,
                                        int64_t layer, LinearRole role, nn::OutputRemake* remake) {
  const LinearRecipe r = recipe_.linear(layer, role);
  if (!r.fp8) return nn::linear(tape, x, weight, remake);
  const size_t unit = store_->layer_unit(layer);
  if (r.block_scaled) {
    COAT_ARG_CHECK(remake == nullptr, "Transformer", "block ", layer,
                   ": a 128-block-scaled linear cannot make its output again (its input is kept grouped along the "
                   "tokens, the forward's along the features)");
    return nn::linear_fp8_block(tape, x, weight, store_->fp8_block_weights(unit), r.save_fp8_input);
  }
  return nn::linear_fp8(tape, x, weight, store_->fp8_weights(unit), r.save_fp8_input, Tensor(), nullptr, remake);
}

autograd::Var Transformer::block(autograd::Tape& tape, int64_t layer, const autograd::Var& x, int64_t batch, int64_t seq,
                                 const BoundaryMaxima& boundary) {
  const int64_t hq = config_.num_attention_heads, hkv = config_.num_key_value_heads, dh = config_.head_dim();
  COAT_ARG_CHECK(x.shape() == Shape({batch, seq, config_.hidden_size}), "Transformer", "block ", layer,
                 " input ", shape_str(x.shape()),
                 " is not [batch, seq, hidden] = ", shape_str({batch, seq, config_.hidden_size}));
  FusedProjections& fused = store_->fused_projections(layer);
  const BlockParams& params = store_->block_params(layer);
  const bool compress = recipe_.compresses(layer);  // COAT: norm and SwiGLU inputs kept as FP8 1x16 groups
  // Fused producers (set_fused_producers). A per-tensor FP8 linear takes its input's scale from the row maxima
  // that the norm or SwiGLU before it wrote (COAT's group scaling; the same bytes as its own amax pass);
  // o_proj's input comes from attention, which writes none. Under coat the residual add h also makes the MLP
  // norm's compressed input. The block's last add would make the next block's input-norm copy: a block takes
  // only its input Var (and under recomputation restarts from it), so the input norm compresses x itself.
  // In the backward each FP8 linear's output gradient comes with its row maxima from the kernel that made it:
  // the inverse RoPE (q/k/v), the SwiGLU (gate/up), the MLP norm with the residual sum (o_proj) and the next
  // block's input norm with the residual sum (down, through `boundary`).
  const auto takes_maxima = [&](LinearRole role) { return takes_row_maxima(layer, role); };
  // block_linear, except that an input with row maxima or an output gradient with them goes to the per-tensor
  // FP8 linear with them (the input's moved in: freed once its scale is made).
  const auto linear = [&](const autograd::Var& in, nn::Parameter& weight, LinearRole role, Tensor in_maxima,
                          nn::GradRowMaximaSlot dy_maxima = nullptr, nn::OutputRemake* remake = nullptr) {
    if (!in_maxima.defined() && !dy_maxima) return block_linear(tape, in, weight, layer, role, remake);
    return nn::linear_fp8(tape, in, weight, store_->fp8_weights(store_->layer_unit(layer)),
                          recipe_.linear(layer, role).save_fp8_input, std::move(in_maxima), std::move(dy_maxima),
                          remake);
  };
  Tensor a_maxima, m_maxima, s_maxima;  // row maxima of the qkv, gate/up and down inputs
  autograd::Var a = norm(tape, x, params.input_norm, compress, nullptr,
                         takes_maxima(LinearRole::Qkv) ? &a_maxima : nullptr, boundary.input);
  // One GEMM for q, k and v: [B, T, (Hq + 2 Hkv) * Dh]; RoPE and attention work on it in place. Under
  // train.recompute = qkv the attention keeps what makes qkv again instead of q, k and v.
  const nn::GradRowMaximaSlot dqkv_maxima = maxima_slot(layer, LinearRole::Qkv);
  const bool remake_qkv = recompute_ == Recompute::Qkv;
  nn::OutputRemake qkv_remake;
  autograd::Var qkv = linear(a, fused.qkv, LinearRole::Qkv, std::move(a_maxima), dqkv_maxima,
                             remake_qkv ? &qkv_remake : nullptr);
  autograd::Var o = nn::packed_attention(
      tape, qkv, hq, hkv, dh, rope_inv_freq_, 1.0 / std::sqrt(static_cast<double>(dh)), dqkv_maxima,
      nn::AttentionCompression{!remake_qkv && recipe_.compresses_attention_qkv(layer),
                               recipe_.compresses_attention_out(layer)},
      std::move(qkv_remake));
  ops::Fp8PerGroup h_compressed;  // coat: the MLP norm's saved input, made by the add
  const nn::GradRowMaximaSlot dh_maxima = maxima_slot(layer, LinearRole::Out);
  autograd::Var h = nn::add(tape, x, linear(o, store_->parameter(params.o_proj), LinearRole::Out, Tensor(), dh_maxima),
                            fused_producers_ && compress ? &h_compressed : nullptr);
  autograd::Var m = norm(tape, h, params.post_norm, compress, &h_compressed,
                         takes_maxima(LinearRole::GateUp) ? &m_maxima : nullptr, dh_maxima);
  // One GEMM for gate and up: [B, T, 2F].
  const nn::GradRowMaximaSlot dgu_maxima = maxima_slot(layer, LinearRole::GateUp);
  autograd::Var gu = linear(m, fused.gate_up, LinearRole::GateUp, std::move(m_maxima), dgu_maxima);
  autograd::Var s = nn::swiglu_packed(tape, gu, compress, takes_maxima(LinearRole::Down) ? &s_maxima : nullptr,
                                      dgu_maxima);
  autograd::Var d = linear(s, store_->parameter(params.down_proj), LinearRole::Down, std::move(s_maxima),
                           takes_maxima(LinearRole::Down) ? boundary.output : nullptr);
  return nn::add(tape, h, d);
}

autograd::Var Transformer::hidden_states(autograd::Tape& tape, const Tensor& ids) {
  COAT_ARG_CHECK(ids.dim() == 2, "Transformer", "token ids must be [batch, seq], got ", shape_str(ids.shape()));
  const int64_t batch = ids.size(0), seq = ids.size(1);
  COAT_ARG_CHECK(seq <= config_.max_position_embeddings, "Transformer", "sequence length ", seq,
                 " exceeds model.max_position_embeddings = ", config_.max_position_embeddings);
  const OuterParams& outer = store_->outer_params();
  const std::optional<size_t> embed_unit = store_->embed_unit();
  if (embed_unit) enter_unit(tape, *embed_unit);
  autograd::Var x = nn::embedding(tape, store_->parameter(outer.embed), ids);
  // A tied LM head uses the embedding's matrix again at the end: its unit stays in use until then.
  if (embed_unit && !config_.tie_word_embeddings) leave_unit(tape, *embed_unit);
  const bool with_grads = store_->with_grads();
  // Between blocks i - 1 and i: the slot in which block i's input norm hands the maxima of the gradient it
  // sums to block i - 1's down linear (only where that one takes them).
  BoundaryMaxima boundary;
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    const NvtxRange block_range("block", i);
    const size_t unit = store_->layer_unit(i);
    boundary.input = std::move(boundary.output);
    boundary.output = i + 1 < config_.num_hidden_layers && tape.grad_enabled() ? maxima_slot(i, LinearRole::Down)
                                                                               : nullptr;
    enter_unit(tape, unit);
    if (recompute_ == Recompute::Blocks) {
      // One tape node per block that keeps only the block's input; the backward runs the block again.
      x = nn::checkpoint(
          tape, x,
          [this, i, batch, seq, boundary](autograd::Tape& t, const autograd::Var& in) {
            return block(t, i, in, batch, seq, boundary);
          },
          with_grads);
    } else {
      x = block(tape, i, x, batch, seq, boundary);
    }
    leave_unit(tape, unit);
  }
  if (store_->head_unit()) enter_unit(tape, *store_->head_unit());
  return norm(tape, x, outer.final_norm);
}

autograd::Var Transformer::head_logits(autograd::Tape& tape, const autograd::Var& x) {
  autograd::Var logits = nn::linear(tape, x, store_->parameter(store_->outer_params().head));
  if (store_->head_unit()) leave_unit(tape, *store_->head_unit());
  if (store_->embed_unit() && config_.tie_word_embeddings) leave_unit(tape, *store_->embed_unit());
  return logits;
}

nn::LossOutput Transformer::forward(autograd::Tape& tape, const Tensor& ids, const Tensor& targets, int64_t ignore_index,
                                    double grad_scale) {
  autograd::Var logits = head_logits(tape, hidden_states(tape, ids));
  return nn::cross_entropy(tape, logits, targets, ignore_index, grad_scale, tape.grad_enabled());
}

Tensor Transformer::logits(const Tensor& ids) {
  autograd::Tape tape(/*grad_enabled=*/false);
  return head_logits(tape, hidden_states(tape, ids)).value;
}

}  // namespace coat::models
