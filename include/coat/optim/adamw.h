// AdamW over parameter segments with FP32 moments: global gradient norm, non-finite detection, clipping,
// per-segment weight decay, and the states exposed by name for checkpoints.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "coat/core/tensor.h"
#include "coat/optim/param_group.h"

namespace coat::optim {

struct AdamWConfig {
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;    ///< applied to segments with decay == true
  float clip_grad_norm = 0.0f;  ///< max global L2 norm of the gradients; 0: no clipping
};

struct StepStats {
  double grad_norm = 0.0;  ///< global L2 norm of all segments' gradients before clipping (inf/NaN if non-finite)
  bool clipped = false;    ///< gradients were scaled down (clip factor < 1)
  bool skipped = false;    ///< the norm was not finite: nothing was modified and the step count is unchanged
};

class AdamW {
 public:
  /// Validates the segments (defined F32 contiguous param and grad of one shape on one device, unique
  /// non-empty names) and the config, and allocates zeroed F32 moments m and v for each segment on its
  /// parameter's device (MemoryCategory::OptimizerState).
  AdamW(std::vector<OptimSegment> segments, AdamWConfig config);

  /// One step with learning rate lr:
  ///  1. grad_norm = sqrt(sum over segments of ops::sum_squares(grad)) (double);
  ///  2. if grad_norm is not finite: returns {grad_norm, false, true} with parameters, moments and step
  ///     count untouched (the caller decides whether to stop or go on);
  ///  3. clip factor = min(1, clip_grad_norm / (grad_norm + 1e-6)) when clipping is on (as
  ///     torch.nn.utils.clip_grad_norm_), passed to the update as grad_scale (gradients are not modified);
  ///  4. ops::adamw_step on each segment (bias correction with step_count() + 1, weight decay where
  ///     segment.decay), then step count += 1.
  StepStats step(float lr);

  /// The global gradient norm alone (step 1 above), without updating anything.
  double grad_norm() const;

  /// "<segment>.exp_avg" and "<segment>.exp_avg_sq" for every segment in order: views of the live states
  /// (write into them to restore a checkpoint).
  std::vector<std::pair<std::string, Tensor>> state_tensors() const;
  /// Completed (not skipped) steps; the next step uses step_count() + 1 for bias correction.
  int64_t step_count() const { return step_count_; }
  void set_step_count(int64_t steps);

  const std::vector<OptimSegment>& segments() const { return segments_; }
  const AdamWConfig& config() const { return config_; }

 private:
  struct State {
    Tensor exp_avg;
    Tensor exp_avg_sq;
  };

  std::vector<OptimSegment> segments_;
  std::vector<State> states_;
  AdamWConfig config_;
  int64_t step_count_ = 0;
};

}  // namespace coat::optim
