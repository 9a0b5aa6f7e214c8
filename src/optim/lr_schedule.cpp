// Learning-rate schedules.
#include "coat/optim/lr_schedule.h"

#include <cmath>
#include <numbers>

#include "coat/core/error.h"

namespace coat::optim {

void LrSchedule::validate() const {
  COAT_ARG_CHECK(kind == Constant || kind == Linear || kind == Cosine, "lr_schedule", "unknown kind ",
                 static_cast<int>(kind));
  COAT_ARG_CHECK(std::isfinite(peak_lr) && peak_lr >= 0.0f, "lr_schedule", "peak_lr ", peak_lr,
                 " must be finite and >= 0");
  COAT_ARG_CHECK(warmup_steps >= 0, "lr_schedule", "warmup_steps ", warmup_steps, " must be >= 0");
  COAT_ARG_CHECK(min_lr_ratio >= 0.0f && min_lr_ratio <= 1.0f, "lr_schedule", "min_lr_ratio ", min_lr_ratio,
                 " must be in [0, 1]");
  COAT_ARG_CHECK(kind == Constant || total_steps >= warmup_steps, "lr_schedule", kind_name(kind),
                 " decay needs total_steps (", total_steps, ") >= warmup_steps (", warmup_steps, ")");
}

float LrSchedule::lr_at(int64_t step) const {
  validate();
  COAT_ARG_CHECK(step >= 1, "lr_schedule", "step ", step, " must be >= 1 (steps are 1-based)");
  const double peak = peak_lr;
  if (step <= warmup_steps) {
    return static_cast<float>(peak * static_cast<double>(step) / static_cast<double>(warmup_steps));
  }
  if (kind == Constant) return peak_lr;
  const double min_lr = peak * static_cast<double>(min_lr_ratio);
  if (step >= total_steps) return static_cast<float>(min_lr);
  const double progress =
      static_cast<double>(step - warmup_steps) / static_cast<double>(total_steps - warmup_steps);
  const double factor = kind == Linear ? 1.0 - progress : 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
  return static_cast<float>(min_lr + (peak - min_lr) * factor);
}

LrSchedule::Kind LrSchedule::parse_kind(const std::string& name) {
  if (name == "constant") return Constant;
  if (name == "linear") return Linear;
  if (name == "cosine") return Cosine;
  throw InvalidArgument(
      detail::concat("[lr_schedule] unknown schedule '", name, "'; valid: constant, linear, cosine"));
}

std::string_view LrSchedule::kind_name(Kind kind) {
  switch (kind) {
    case Constant: return "constant";
    case Linear: return "linear";
    case Cosine: return "cosine";
  }
  return "unknown";
}

}  // namespace coat::optim
