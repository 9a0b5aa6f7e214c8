// The RoPE variant of a model, under the names HF's rope_scaling (transformers 4.x) and rope_parameters
// (5.x) use: the default rotary embedding, linear position interpolation, or Llama-3.1's per-frequency
// smooth interpolation. It turns the base theta into the Dh/2 inverse frequencies the rope kernels take.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string_view>
#include <vector>

#include "coat/core/config_reader.h"

namespace coat::models {

enum class RopeType { Default, Linear, Llama3 };

/// "default" | "linear" | "llama3", as HF's rope_type spells it.
constexpr std::string_view to_string(RopeType type) {
  switch (type) {
    case RopeType::Default:
      return "default";
    case RopeType::Linear:
      return "linear";
    case RopeType::Llama3:
      return "llama3";
  }
  return "default";
}

/// The rope types coat-train implements, for messages: "default, linear, llama3".
constexpr std::string_view kSupportedRopeTypes = "default, linear, llama3";

struct RopeScaling {
  RopeType rope_type = RopeType::Default;
  /// linear: positions / factor (inv_freq / factor); llama3: the low frequencies' divisor.
  double factor = 1.0;
  /// llama3: wavelengths above original_max_position_embeddings / low_freq_factor are divided by factor,
  /// those below original_max_position_embeddings / high_freq_factor kept, those between interpolated.
  double low_freq_factor = 0.0;
  double high_freq_factor = 0.0;
  int64_t original_max_position_embeddings = 0;

  static RopeScaling linear(double factor) { return {RopeType::Linear, factor, 0.0, 0.0, 0}; }
  static RopeScaling llama3(double factor, double low_freq_factor, double high_freq_factor,
                            int64_t original_max_position_embeddings) {
    return {RopeType::Llama3, factor, low_freq_factor, high_freq_factor, original_max_position_embeddings};
  }
  bool is_default() const { return rope_type == RopeType::Default; }
  /// Reads model.rope_scaling strictly: rope_type (default "default"), then exactly the keys of that type
  /// (linear: factor; llama3: factor, low_freq_factor, high_freq_factor, original_max_position_embeddings).
  static RopeScaling from_config(ConfigSection section);
  /// The same keys, which are also what HF's rope_scaling holds.
  nlohmann::json to_json() const;
  /// InvalidArgument naming the first value out of its domain (model.rope_scaling.<key>).
  void validate() const;
  /// The Dh/2 inverse frequencies in double: ops::rope_inverse_frequencies(theta, head_dim) (bit for bit
  /// for the default type), then scaled as transformers' _compute_linear_scaling_rope_parameters /
  /// _compute_llama3_parameters do (computed here in double; transformers computes them in float32).
  std::vector<double> inverse_frequencies(double theta, int64_t head_dim) const;
  bool operator==(const RopeScaling&) const = default;
};

}  // namespace coat::models
