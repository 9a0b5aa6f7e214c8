// The architecture of a Llama- or OLMo-family model, under the names HF's config.json uses, and what
// follows from it: parameter count and matmul FLOPs per token.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "coat/core/config_reader.h"
#include "coat/models/rope_scaling.h"

namespace coat::models {

enum class Architecture { Llama, Olmo };

/// "llama" | "olmo", as model.architecture spells it.
constexpr std::string_view to_string(Architecture architecture) {
  return architecture == Architecture::Llama ? "llama" : "olmo";
}

struct ModelConfig {
  Architecture architecture = Architecture::Llama;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;         ///< model.rope_scaling; absent: the default RoPE
  double rms_norm_eps = 1e-5;       ///< Llama's RMSNorm epsilon; OLMo's LayerNorm uses 1e-5 as HF does
  bool tie_word_embeddings = false;
  double initializer_range = 0.02;  ///< std of the normal initialisation of matrices and embeddings

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  /// RoPE's Dh/2 inverse frequencies (rope_theta and rope_scaling), in double.
  std::vector<double> rope_inverse_frequencies() const {
    return rope_scaling.inverse_frequencies(rope_theta, head_dim());
  }
  /// Llama: RMSNorm with a weight; OLMo: LayerNorm without affine parameters.
  bool norms_have_weights() const { return architecture == Architecture::Llama; }

  /// Every parameter, embeddings included, counted once when tied.
  int64_t parameter_count() const;
  /// Parameters of the matrix products per token (all linear layers and the LM head; not the embedding lookup).
  int64_t matmul_parameter_count() const;
  /// Model FLOPs per token for training, as PaLM counts them: 6 N + 12 L H S (N = matmul parameters,
  /// H = hidden size, S = sequence length).
  double training_flops_per_token(int64_t seq_len) const;

  /// Reads the "model" section strictly (unknown keys fail with a suggestion) and validates the shapes.
  static ModelConfig from_config(ConfigSection section);
  /// The "model" section with every field (what a resolved config and checkpoints hold).
  nlohmann::json to_json() const;
  /// HF config.json for LlamaForCausalLM / OlmoForCausalLM, as transformers 4.x and 5.x read it (a RoPE
  /// scaling goes to rope_theta + rope_scaling, which 5.x still reads). In hf_config.cpp.
  nlohmann::json to_hf_json() const;
  /// An HF config.json as transformers 4.x or 5.x writes it (rope_theta / rope_scaling, or 5.x's
  /// rope_parameters). Every setting that would make our numbers differ from transformers' is refused with a
  /// ConfigError naming the key and what is supported (biases, other activations, head_dim, sliding window,
  /// QK norms, other RoPE types, other model types); keys that do not change the numbers are ignored.
  static ModelConfig from_hf_json(const nlohmann::json& hf);
  /// Throws InvalidArgument naming the first inconsistent field.
  void validate() const;
  /// Part of validate(): InvalidArgument when the sizes give more than 2^56 parameters or elements (the
  /// counts in 64-bit integers would overflow on the way).
  void check_sizes_fit() const;
  std::string architecture_name() const { return std::string(to_string(architecture)); }
  bool operator==(const ModelConfig&) const = default;
};

}  // namespace coat::models
