// The model section: strict reading, validation, parameter and FLOP counts (HF config.json: hf_config.cpp).
#include "coat/models/model_config.h"

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>

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
  check_sizes_fit();
  if (!(std::isfinite(rope_theta) && rope_theta > 0.0))
    throw InvalidArgument("model.rope_theta must be positive");
  rope_scaling.validate();
  if (!(rms_norm_eps > 0.0)) throw InvalidArgument("model.rms_norm_eps must be positive");
  if (!(initializer_range > 0.0)) throw InvalidArgument("model.initializer_range must be positive");
}

void ModelConfig::check_sizes_fit() const {
  // parameter_count() and the tensors' element counts in 64-bit integers: every product on the way must fit
  // (a config of absurd sizes is refused here instead of overflowing there).
  const auto fits = [](std::initializer_list<int64_t> factors) {
    int64_t product = 1;
    for (int64_t f : factors) {
      if (__builtin_mul_overflow(product, f, &product)) return false;
    }
    return product <= (int64_t{1} << 56);  // headroom for the sums of parameter_count and byte counts
  };
  const int64_t h = hidden_size;
  if (!fits({num_hidden_layers, 8, h, h}) || !fits({num_hidden_layers, 8, h, intermediate_size}) ||
      !fits({vocab_size, h, 2}) || !fits({max_position_embeddings, h})) {
    throw InvalidArgument(detail::concat("model sizes (hidden_size ", hidden_size, ", intermediate_size ",
                                         intermediate_size, ", num_hidden_layers ", num_hidden_layers, ", vocab_size ",
                                         vocab_size, ", max_position_embeddings ", max_position_embeddings,
                                         ") give more than 2^56 parameters or elements: far beyond any model"));
  }
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
  c.rope_scaling = RopeScaling::from_config(s.section("rope_scaling"));
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
  nlohmann::json j = {{"architecture", architecture_name()},
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
  // Only when set: the default RoPE leaves resolved configs and checkpoints as they were.
  if (!rope_scaling.is_default()) j["rope_scaling"] = rope_scaling.to_json();
  return j;
}

}  // namespace coat::models
