// The model section: strict reading, validation, HF config.json in both directions, parameter and FLOP
// counts.
#include "coat/models/model_config.h"

namespace coat::models {

int64_t ModelConfig::parameter_count() const {
  const int64_t h = hidden_size, kv = num_key_value_heads * head_dim();
  const int64_t attention = h * h * 2 + h * kv * 2;  // q, o and k, v
  const int64_t mlp = 3 * h * intermediate_size;
  const int64_t norms = norms_have_weights() ? 2 * h : 0;
  const int64_t embeddings = vocab_size * h * (tie_word_embeddings ? 1 : 2);
  const int64_t final_norm = norms_have_weights() ? h : 0;
  return num_hidden_layers * (attention + mlp + norms) + embeddings + final_norm;
}

int64_t ModelConfig::matmul_parameter_count() const {
  const int64_t h = hidden_size, kv = num_key_value_heads * head_dim();
  return num_hidden_layers * (h * h * 2 + h * kv * 2 + 3 * h * intermediate_size) + vocab_size * h;
}

double ModelConfig::training_flops_per_token(int64_t seq_len) const {
  return 6.0 * static_cast<double>(matmul_parameter_count()) +
         12.0 * static_cast<double>(num_hidden_layers) * static_cast<double>(hidden_size) * static_cast<double>(seq_len);
}

void ModelConfig::validate() const {
  auto positive = [](int64_t v, const char* name) {
    if (v <= 0) throw InvalidArgument(detail::concat("model.", name, " = ", v, " must be positive"));
  };
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(num_hidden_layers, "num_hidden_layers");
  positive(num_attention_heads, "num_attention_heads");
  positive(num_key_value_heads, "num_key_value_heads");
  positive(vocab_size, "vocab_size");
  positive(max_position_embeddings, "max_position_embeddings");
  if (hidden_size % num_attention_heads != 0) {
    throw InvalidArgument(detail::concat("model.hidden_size = ", hidden_size, " is not a multiple of num_attention_heads = ",
                                         num_attention_heads));
  }
  if (num_attention_heads % num_key_value_heads != 0) {
    throw InvalidArgument(detail::concat("model.num_attention_heads = ", num_attention_heads,
                                         " is not a multiple of num_key_value_heads = ", num_key_value_heads));
  }
  if (head_dim() % 2 != 0) throw InvalidArgument(detail::concat("model: head dimension ", head_dim(), " must be even for RoPE"));
  if (!(rope_theta > 0.0)) throw InvalidArgument("model.rope_theta must be positive");
  if (!(rms_norm_eps > 0.0)) throw InvalidArgument("model.rms_norm_eps must be positive");
  if (!(initializer_range > 0.0)) throw InvalidArgument("model.initializer_range must be positive");
}

ModelConfig ModelConfig::from_config(ConfigSection s) {
  ModelConfig c;
  c.architecture = s.choice("architecture", Architecture::Llama, {Architecture::Llama, Architecture::Olmo});
  c.hidden_size = s.require<int64_t>("hidden_size");
  c.intermediate_size = s.require<int64_t>("intermediate_size");
  c.num_hidden_layers = s.require<int64_t>("num_hidden_layers");
  c.num_attention_heads = s.require<int64_t>("num_attention_heads");
  c.num_key_value_heads = s.get<int64_t>("num_key_value_heads", c.num_attention_heads);
  c.vocab_size = s.require<int64_t>("vocab_size");
  c.max_position_embeddings = s.require<int64_t>("max_position_embeddings");
  c.rope_theta = s.get<double>("rope_theta", 10000.0);
  c.rms_norm_eps = s.get<double>("rms_norm_eps", 1e-5);
  c.tie_word_embeddings = s.get<bool>("tie_word_embeddings", false);
  c.initializer_range = s.get<double>("initializer_range", 0.02);
  s.finish();
  try {
    c.validate();
  } catch (const InvalidArgument& e) {
    throw ConfigError(detail::concat("config: ", e.what()));
  }
  return c;
}

nlohmann::json ModelConfig::to_json() const {
  return {{"architecture", architecture_name()},
          {"hidden_size", hidden_size},
          {"intermediate_size", intermediate_size},
          {"num_hidden_layers", num_hidden_layers},
          {"num_attention_heads", num_attention_heads},
          {"num_key_value_heads", num_key_value_heads},
          {"vocab_size", vocab_size},
          {"max_position_embeddings", max_position_embeddings},
          {"rope_theta", rope_theta},
          {"rms_norm_eps", rms_norm_eps},
          {"tie_word_embeddings", tie_word_embeddings},
          {"initializer_range", initializer_range}};
}

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
  j["rope_theta"] = rope_theta;
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

ModelConfig ModelConfig::from_hf_json(const nlohmann::json& hf) {
  auto need = [&](const char* key) -> const nlohmann::json& {
    if (!hf.contains(key) || hf.at(key).is_null()) {
      throw ConfigError(detail::concat("HF config.json: missing '", key, "'"));
    }
    return hf.at(key);
  };
  ModelConfig c;
  const std::string type = hf.value("model_type", std::string("llama"));
  if (type == "llama") {
    c.architecture = Architecture::Llama;
  } else if (type == "olmo") {
    c.architecture = Architecture::Olmo;
    if (hf.contains("clip_qkv") && !hf.at("clip_qkv").is_null()) {
      throw ConfigError("HF config.json: clip_qkv is not supported (expected null)");
    }
  } else {
    throw ConfigError(detail::concat("HF config.json: model_type '", type, "' is not supported; expected llama or olmo"));
  }
  c.hidden_size = need("hidden_size").get<int64_t>();
  c.intermediate_size = need("intermediate_size").get<int64_t>();
  c.num_hidden_layers = need("num_hidden_layers").get<int64_t>();
  c.num_attention_heads = need("num_attention_heads").get<int64_t>();
  c.num_key_value_heads = hf.value("num_key_value_heads", c.num_attention_heads);
  if (hf.contains("num_key_value_heads") && hf.at("num_key_value_heads").is_null()) c.num_key_value_heads = c.num_attention_heads;
  c.vocab_size = need("vocab_size").get<int64_t>();
  c.max_position_embeddings = need("max_position_embeddings").get<int64_t>();
  c.rope_theta = hf.value("rope_theta", 10000.0);
  c.rms_norm_eps = hf.value("rms_norm_eps", 1e-5);
  c.tie_word_embeddings = hf.value("tie_word_embeddings", false);
  c.initializer_range = hf.value("initializer_range", 0.02);
  c.validate();
  return c;
}

}  // namespace coat::models
