// The RoPE variants: strict reading of model.rope_scaling, validation, and the inverse frequencies.
#include "coat/models/rope_scaling.h"

#include <cmath>
#include <numbers>

#include "coat/ops/rope.h"

namespace coat::models {

RopeScaling RopeScaling::from_config(ConfigSection s) {
  RopeScaling r;
  r.rope_type =
      s.choice("rope_type", RopeType::Default, {RopeType::Default, RopeType::Linear, RopeType::Llama3});
  if (r.rope_type != RopeType::Default) r.factor = s.require<double>("factor");
  if (r.rope_type == RopeType::Llama3) {
    r.low_freq_factor = s.require<double>("low_freq_factor");
    r.high_freq_factor = s.require<double>("high_freq_factor");
    r.original_max_position_embeddings = s.require<int64_t>("original_max_position_embeddings");
  }
  s.finish();
  return r;
}

nlohmann::json RopeScaling::to_json() const {
  nlohmann::json j = {{"rope_type", std::string(to_string(rope_type))}};
  if (rope_type != RopeType::Default) j["factor"] = factor;
  if (rope_type == RopeType::Llama3) {
    j["low_freq_factor"] = low_freq_factor;
    j["high_freq_factor"] = high_freq_factor;
    j["original_max_position_embeddings"] = original_max_position_embeddings;
  }
  return j;
}

void RopeScaling::validate() const {
  const auto positive = [](double v, const char* key) {
    if (!(std::isfinite(v) && v > 0.0)) {
      throw InvalidArgument(detail::concat("model.rope_scaling.", key, " = ", v, " must be finite and > 0"));
    }
  };
  if (rope_type == RopeType::Default) return;
  positive(factor, "factor");
  if (rope_type != RopeType::Llama3) return;
  positive(low_freq_factor, "low_freq_factor");
  positive(high_freq_factor, "high_freq_factor");
  if (!(high_freq_factor > low_freq_factor)) {
    throw InvalidArgument(detail::concat("model.rope_scaling.high_freq_factor = ", high_freq_factor,
                                         " must be greater than low_freq_factor = ", low_freq_factor,
                                         " (the interpolation between them divides by their difference)"));
  }
  if (original_max_position_embeddings <= 0) {
    throw InvalidArgument(detail::concat("model.rope_scaling.original_max_position_embeddings = ",
                                         original_max_position_embeddings, " must be positive"));
  }
}

std::vector<double> RopeScaling::inverse_frequencies(double theta, int64_t head_dim) const {
  validate();
  std::vector<double> inv_freq = ops::rope_inverse_frequencies(theta, head_dim);
  switch (rope_type) {
    case RopeType::Default:
      break;
    case RopeType::Linear:  // positions / factor: the same angles as inv_freq / factor
      for (double& f : inv_freq) f /= factor;
      break;
    case RopeType::Llama3: {
      // Llama-3.1: a frequency whose wavelength fits high_freq_factor times into the original context is
      // kept, one whose wavelength exceeds original / low_freq_factor is divided by factor, and the ones
      // between move smoothly from one to the other with original / wavelength.
      const double original = static_cast<double>(original_max_position_embeddings);
      const double low_freq_wavelen = original / low_freq_factor;
      const double high_freq_wavelen = original / high_freq_factor;
      for (double& f : inv_freq) {
        const double wavelen = 2.0 * std::numbers::pi / f;
        if (wavelen < high_freq_wavelen) continue;
        if (wavelen > low_freq_wavelen) {
          f = f / factor;
        } else {
          const double smooth = (original / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
          f = (1.0 - smooth) * f / factor + smooth * f;
        }
      }
      break;
    }
  }
  return inv_freq;
}

}  // namespace coat::models
