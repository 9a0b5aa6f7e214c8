// HF config.json in both directions. Reading follows what transformers 4.x and 5.x do with the same file
// (LlamaForCausalLM / OlmoForCausalLM), and refuses, naming the key, every setting whose numbers we would
// not reproduce: import is right or refuses, never silently different.
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "coat/models/model_config.h"

namespace coat::models {

nlohmann::json ModelConfig::to_hf_json() const {
  nlohmann::json j;
  const bool llama = architecture == Architecture::Llama;
  j["architectures"] = {llama ? "LlamaForCausalLM" : "OlmoForCausalLM"};
  j["model_type"] = llama ? "llama" : "olmo";
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["vocab_size"] = vocab_size;
  j["max_position_embeddings"] = max_position_embeddings;
  // transformers 4.x keys; 5.x moves both into rope_parameters when it reads them.
  j["rope_theta"] = rope_theta;
  if (!rope_scaling.is_default()) j["rope_scaling"] = rope_scaling.to_json();
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["initializer_range"] = initializer_range;
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["torch_dtype"] = "float32";
  j["bos_token_id"] = 1;
  j["eos_token_id"] = 2;
  if (llama) {
    j["rms_norm_eps"] = rms_norm_eps;
    j["mlp_bias"] = false;
    j["head_dim"] = head_dim();
  } else {
    j["clip_qkv"] = nullptr;
    j["pad_token_id"] = 1;
  }
  return j;
}

namespace {

// Typed reads of an HF config.json object (the file, or its rope_scaling / rope_parameters, whose keys are
// then named "rope_scaling.factor"): a missing key, a wrong type or an integer stored as a float is a
// ConfigError naming the key (never a JSON library exception, never a silent conversion).
class HfConfigReader {
 public:
  explicit HfConfigReader(const nlohmann::json& hf, std::string prefix = "")
      : hf_(hf), prefix_(std::move(prefix)) {
    if (!hf_.is_object()) {
      throw ConfigError(detail::concat(
          "HF config.json: ",
          prefix_.empty() ? "expected a JSON object"
                          : "'" + prefix_.substr(0, prefix_.size() - 1) + "' must be a JSON object",
          ", got ", hf_.type_name()));
    }
  }
  const nlohmann::json& json() const { return hf_; }
  /// The key as messages name it.
  std::string name(std::string_view key) const { return prefix_ + std::string(key); }
  bool present(const char* key) const { return hf_.contains(key) && !hf_.at(key).is_null(); }
  int64_t integer(const char* key) const {
    if (!present(key)) throw ConfigError(detail::concat("HF config.json: missing '", name(key), "'"));
    const nlohmann::json& v = hf_.at(key);
    if (!v.is_number_integer() ||
        (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))) {
      throw ConfigError(
          detail::concat("HF config.json: '", name(key), "' must be an integer, got ", v.dump()));
    }
    return v.get<int64_t>();
  }
  int64_t integer(const char* key, int64_t fallback) const { return present(key) ? integer(key) : fallback; }
  double number(const char* key) const {
    if (!present(key)) throw ConfigError(detail::concat("HF config.json: missing '", name(key), "'"));
    const nlohmann::json& v = hf_.at(key);
    if (!v.is_number())
      throw ConfigError(detail::concat("HF config.json: '", name(key), "' must be a number, got ", v.dump()));
    return v.get<double>();
  }
  double number(const char* key, double fallback) const { return present(key) ? number(key) : fallback; }
  std::optional<double> optional_number(const char* key) const {
    return present(key) ? std::optional<double>(number(key)) : std::nullopt;
  }
  bool boolean(const char* key, bool fallback) const {
    if (!present(key)) return fallback;
    const nlohmann::json& v = hf_.at(key);
    if (!v.is_boolean()) {
      throw ConfigError(
          detail::concat("HF config.json: '", name(key), "' must be true or false, got ", v.dump()));
    }
    return v.get<bool>();
  }
  std::string string(const char* key, const std::string& fallback) const {
    if (!present(key)) return fallback;
    const nlohmann::json& v = hf_.at(key);
    if (!v.is_string())
      throw ConfigError(detail::concat("HF config.json: '", name(key), "' must be a string, got ", v.dump()));
    return v.get<std::string>();
  }
  /// ConfigError: '<key>' = <value> is not supported (<why>); expected <expected>.
  [[noreturn]] void refuse(const char* key, std::string_view why, std::string_view expected) const {
    throw ConfigError(detail::concat("HF config.json: '", name(key), "' = ", hf_.at(key).dump(),
                                     " is not supported (", why, "); expected ", expected));
  }

 private:
  const nlohmann::json& hf_;
  std::string prefix_;
};

Architecture read_architecture(const HfConfigReader& r) {
  if (!r.present("model_type")) {
    throw ConfigError("HF config.json: missing 'model_type'; supported: llama, olmo");
  }
  const std::string type = r.string("model_type", "");
  if (type == "llama") return Architecture::Llama;
  if (type == "olmo") return Architecture::Olmo;
  if (type == "olmo2") {
    throw ConfigError(
        "HF config.json: 'model_type' = \"olmo2\": OLMo-2 is not supported yet (its QK norms and its "
        "norms after attention and MLP are not implemented); supported: llama, olmo");
  }
  throw ConfigError(detail::concat("HF config.json: 'model_type' = \"", type,
                                   "\" is not supported; supported: llama, olmo"));
}

/// Refuses the settings of the file that change the numbers of a Llama / OLMo forward away from ours.
/// (pretraining_tp > 1 is accepted: transformers then computes the same matrix products in slices and sums
/// them, the same function in another rounding order.)
void refuse_unsupported_settings(const HfConfigReader& r, Architecture architecture, int64_t head_dim) {
  if (r.boolean("attention_bias", false))
    r.refuse("attention_bias", "coat-train's q/k/v/o projections have no bias", "false");
  if (architecture == Architecture::Llama && r.boolean("mlp_bias", false)) {
    r.refuse("mlp_bias", "coat-train's MLP projections have no bias", "false");
  }
  // OLMo-1 uses SwiGLU as Llama does; transformers maps "swish" to the same SiLU.
  const std::string act = r.string("hidden_act", "silu");
  if (act != "silu" && act != "swish") r.refuse("hidden_act", "coat-train's MLP is SwiGLU", "\"silu\"");
  if (r.present("head_dim") && r.integer("head_dim") != head_dim) {
    r.refuse("head_dim",
             detail::concat("coat-train's head dimension is hidden_size / num_attention_heads = ", head_dim),
             detail::concat(head_dim, " or null"));
  }
  if (r.present("sliding_window"))
    r.refuse("sliding_window", "coat-train's attention sees the whole causal context", "null");
  for (const char* key : {"qk_layernorm", "use_qk_norm"}) {
    if (r.boolean(key, false)) r.refuse(key, "coat-train has no norms on q and k", "false");
  }
  if (architecture == Architecture::Olmo && r.present("clip_qkv")) {
    r.refuse("clip_qkv", "coat-train does not clip q, k and v", "null");
  }
  if (r.number("attention_dropout", 0.0) != 0.0)
    r.refuse("attention_dropout", "coat-train has no dropout", "0");
  if (r.number("partial_rotary_factor", 1.0) != 1.0) {
    r.refuse("partial_rotary_factor", "coat-train's RoPE turns the whole head", "1");
  }
}

/// What one of rope_scaling (4.x) / rope_parameters (5.x) says.
struct RopeSection {
  std::optional<double> theta;  ///< its rope_theta (5.x keeps theta here)
  RopeScaling scaling;
};

RopeType read_rope_type(const HfConfigReader& d) {
  const std::string rope_type = d.string("rope_type", ""), old_type = d.string("type", "");
  if (!rope_type.empty() && !old_type.empty() && rope_type != old_type) {
    throw ConfigError(detail::concat("HF config.json: '", d.name("rope_type"), "' = \"", rope_type,
                                     "\" and '", d.name("type"), "' = \"", old_type, "\" disagree"));
  }
  const std::string type = !rope_type.empty() ? rope_type : !old_type.empty() ? old_type : "default";
  for (RopeType t : {RopeType::Default, RopeType::Linear, RopeType::Llama3}) {
    if (to_string(t) == type) return t;
  }
  throw ConfigError(detail::concat("HF config.json: RoPE type \"", type, "\" ('",
                                   d.name(!rope_type.empty() ? "rope_type" : "type"),
                                   "') is not supported; supported: ", kSupportedRopeTypes));
}

/// Reads hf[key] (an object) as transformers does: keys of other RoPE types are ignored (transformers
/// ignores them too); llama3's original_max_position_embeddings may also stand at the top level (5.x prefers
/// it there) or be absent (5.x then takes max_position_embeddings).
RopeSection read_rope_section(const HfConfigReader& top, const char* key, int64_t max_position_embeddings) {
  const HfConfigReader d(top.json().at(key), std::string(key) + ".");
  for (const auto& [name, value] : d.json().items()) {
    if (value.is_object()) {
      throw ConfigError(detail::concat("HF config.json: '", key, "' holds a RoPE per layer type ('",
                                       d.name(name), "'): not supported; expected one RoPE for every layer"));
    }
  }
  RopeSection s;
  s.theta = d.optional_number("rope_theta");
  if (d.number("partial_rotary_factor", 1.0) != 1.0) {
    d.refuse("partial_rotary_factor", "coat-train's RoPE turns the whole head", "1");
  }
  RopeScaling& r = s.scaling;
  r.rope_type = read_rope_type(d);
  if (r.rope_type == RopeType::Default) return s;
  r.factor = d.number("factor");
  if (r.rope_type == RopeType::Llama3) {
    r.low_freq_factor = d.number("low_freq_factor");
    r.high_freq_factor = d.number("high_freq_factor");
    const std::optional<int64_t> inner = d.present("original_max_position_embeddings")
                                             ? std::optional(d.integer("original_max_position_embeddings"))
                                             : std::nullopt;
    const std::optional<int64_t> outer = top.present("original_max_position_embeddings")
                                             ? std::optional(top.integer("original_max_position_embeddings"))
                                             : std::nullopt;
    if (inner && outer && *inner != *outer) {
      throw ConfigError(detail::concat("HF config.json: '", d.name("original_max_position_embeddings"),
                                       "' = ", *inner, " and 'original_max_position_embeddings' = ", *outer,
                                       " disagree"));
    }
    r.original_max_position_embeddings = inner.value_or(outer.value_or(max_position_embeddings));
  }
  return s;
}

/// rope_theta and the RoPE variant from wherever transformers 4.x (rope_theta, rope_scaling) and 5.x
/// (rope_parameters, theta inside) put them. Places that disagree are refused (the two versions would read
/// the file differently); no theta anywhere is transformers' default, 10000.
void read_rope(const HfConfigReader& r, ModelConfig& c) {
  std::vector<std::pair<std::string, double>> thetas;
  if (r.present("rope_theta")) thetas.emplace_back("rope_theta", r.number("rope_theta"));
  std::optional<RopeSection> chosen;
  std::string chosen_key;
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    if (!r.present(key)) continue;
    RopeSection s = read_rope_section(r, key, c.max_position_embeddings);
    if (s.theta) thetas.emplace_back(std::string(key) + ".rope_theta", *s.theta);
    if (chosen && !(chosen->scaling == s.scaling)) {
      throw ConfigError(detail::concat("HF config.json: '", chosen_key,
                                       "' = ", r.json().at(chosen_key).dump(), " and '", key,
                                       "' = ", r.json().at(key).dump(), " describe different RoPE"));
    }
    chosen = std::move(s);
    chosen_key = key;
  }
  for (const auto& [key, theta] : thetas) {
    if (theta != thetas.front().second) {
      throw ConfigError(detail::concat("HF config.json: '", thetas.front().first, "' = ",
                                       thetas.front().second, " and '", key, "' = ", theta, " disagree"));
    }
  }
  c.rope_theta = thetas.empty() ? 10000.0 : thetas.front().second;
  if (chosen) c.rope_scaling = chosen->scaling;
}

}  // namespace

ModelConfig ModelConfig::from_hf_json(const nlohmann::json& hf) {
  const HfConfigReader r(hf);
  ModelConfig c;
  c.architecture = read_architecture(r);
  c.hidden_size = r.integer("hidden_size");
  c.intermediate_size = r.integer("intermediate_size");
  c.num_hidden_layers = r.integer("num_hidden_layers");
  c.num_attention_heads = r.integer("num_attention_heads");
  c.num_key_value_heads = r.integer("num_key_value_heads", c.num_attention_heads);
  c.vocab_size = r.integer("vocab_size");
  c.max_position_embeddings = r.integer("max_position_embeddings");
  c.rms_norm_eps = r.number("rms_norm_eps", 1e-5);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  c.initializer_range = r.number("initializer_range", 0.02);
  try {
    c.validate();  // the sizes first: head_dim below divides by num_attention_heads
    refuse_unsupported_settings(r, c.architecture, c.head_dim());
    read_rope(r, c);
    c.validate();
  } catch (const InvalidArgument& e) {
    throw ConfigError(detail::concat("HF config.json: ", e.what()));
  }
  return c;
}

}  // namespace coat::models
