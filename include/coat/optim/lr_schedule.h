// Learning-rate schedules: linear warmup from 0, then constant, linear decay or cosine decay to a floor.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace coat::optim {

struct LrSchedule {
  enum Kind { Constant, Linear, Cosine };

  Kind kind = Constant;
  float peak_lr = 0.0f;
  int64_t warmup_steps = 0;   ///< lr rises linearly from 0 to peak over steps 1..warmup_steps
  int64_t total_steps = 0;    ///< the decay reaches min_lr at this step (Linear, Cosine); ignored by Constant
  float min_lr_ratio = 0.0f;  ///< min_lr = peak_lr * min_lr_ratio, in [0, 1]

  /// The learning rate of optimizer step `step` (1-based), computed in double and rounded once:
  ///  - step <= warmup_steps: peak * step / warmup_steps (so the last warmup step has exactly peak);
  ///  - Constant: peak;
  ///  - Linear: min + (peak - min) * (1 - progress);
  ///  - Cosine: min + (peak - min) * (1 + cos(pi * progress)) / 2;
  ///    progress = (step - warmup) / (total - warmup), and steps at or past total_steps give min.
  /// Throws InvalidArgument for step < 1 or an invalid schedule (see validate()).
  float lr_at(int64_t step) const;

  /// Throws InvalidArgument unless peak_lr is finite and >= 0, warmup_steps >= 0, min_lr_ratio in [0, 1],
  /// and (Linear, Cosine) total_steps >= warmup_steps.
  void validate() const;

  /// "constant" | "linear" | "cosine"; anything else throws InvalidArgument listing the valid names.
  static Kind parse_kind(const std::string& name);
  static std::string_view kind_name(Kind kind);
};

/// kind_name, under the name the config reader (ConfigSection::choice) looks for.
inline std::string_view to_string(LrSchedule::Kind kind) { return LrSchedule::kind_name(kind); }

}  // namespace coat::optim
