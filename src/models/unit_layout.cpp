#include "coat/models/unit_layout.h"

#include <set>

namespace coat::models {

namespace {

int64_t align_up(int64_t n) {
  return (n + kUnitAlignElements - 1) / kUnitAlignElements * kUnitAlignElements;
}

/// `joined`: parameters that the next one follows directly, without alignment padding between them.
UnitLayout make_unit(std::string name, std::vector<std::pair<std::string, Shape>> params,
                     const std::set<std::string>& joined = {}) {
  UnitLayout u;
  u.name = std::move(name);
  u.params = std::move(params);
  for (size_t i = 0; i < u.params.size(); ++i) {
    const auto& [pname, shape] = u.params[i];
    u.offsets.push_back(u.numel);
    const bool last = i + 1 == u.params.size();
    // The end of a parameter, or of a run of joined ones, is padded to the next boundary.
    u.numel = !last && joined.count(pname) != 0 ? u.numel + shape_numel(shape)
                                                : align_up(u.numel + shape_numel(shape));
  }
  return u;
}

}  // namespace

std::vector<UnitLayout> unit_layouts(const ModelConfig& config) {
  const int64_t h = config.hidden_size, kv = config.num_key_value_heads * config.head_dim();
  const int64_t ffn = config.intermediate_size, vocab = config.vocab_size;
  std::vector<UnitLayout> units;
  units.push_back(make_unit("embed", {{"model.embed_tokens.weight", {vocab, h}}}));
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    std::vector<std::pair<std::string, Shape>> shapes = {
        {p + "self_attn.q_proj.weight", {h, h}},  {p + "self_attn.k_proj.weight", {kv, h}},
        {p + "self_attn.v_proj.weight", {kv, h}}, {p + "self_attn.o_proj.weight", {h, h}},
        {p + "mlp.gate_proj.weight", {ffn, h}},   {p + "mlp.up_proj.weight", {ffn, h}},
        {p + "mlp.down_proj.weight", {h, ffn}}};
    if (config.norms_have_weights()) {
      shapes.push_back({p + "input_layernorm.weight", {h}});
      shapes.push_back({p + "post_attention_layernorm.weight", {h}});
    }
    // [q; k; v] and [gate; up] without padding: the block multiplies by each as one matrix.
    const std::set<std::string> joined = {p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight",
                                          p + "mlp.gate_proj.weight"};
    units.push_back(make_unit("layers." + std::to_string(i), std::move(shapes), joined));
  }
  std::vector<std::pair<std::string, Shape>> head;
  if (config.norms_have_weights()) head.push_back({"model.norm.weight", {h}});
  if (!config.tie_word_embeddings) head.push_back({"lm_head.weight", {vocab, h}});
  if (!head.empty()) units.push_back(make_unit("head", std::move(head)));
  return units;
}

}  // namespace coat::models
