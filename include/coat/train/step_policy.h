// How a training step applies the optimizer, as a policy on the model's unit hooks (models/unit_hooks.h):
// after the backward of the last micro-batch (every unit at once, with clipping by the global norm), or in
// the backward, each unit as soon as its gradients are complete (optim.apply_in_backward: the block units can
// share one gradient buffer). The trainer runs one step path and asks the policy at its three points.
#pragma once

#include <memory>
#include <string>

#include "coat/models/transformer.h"
#include "coat/optim/adamw.h"

namespace coat::train {

/// What a step's update did.
struct StepOutcome {
  optim::StepStats stats;
  bool loss_finite = true;  ///< false: some micro-batch's loss was inf or NaN and nothing was updated
  std::string culprit;  ///< when skipped: the first non-finite tensor ("the loss", a parameter or unit name)
  std::string updated;  ///< when skipped: what was updated all the same (for the message)
};

class StepPolicy : public models::UnitHooks {
 public:
  /// Before the first forward of a step: the gradients are zeroed (deferred where they can be).
  virtual void begin(float lr) = 0;
  /// After a micro-batch's forward, before its backward: its loss sum (F64 [1]) on the device, not read. An
  /// update applied in the backward must not run after a non-finite loss.
  virtual void loss_ready(const Tensor& loss_sum) { (void)loss_sum; }
  /// After the last micro-batch's backward; `loss_finite`: no micro-batch's loss was inf or NaN (read once
  /// per step by the caller; then nothing is updated).
  virtual StepOutcome end(bool loss_finite) = 0;
  /// After an exception inside the step: leaves the optimizer ready for the next step. Never throws.
  virtual void abandon() noexcept {}
};

/// The policy of `apply_in_backward` (optim.apply_in_backward) over the model's store and the optimizer whose
/// buffers are the store's units, in unit order. Both must outlive it.
std::unique_ptr<StepPolicy> make_step_policy(bool apply_in_backward, models::UnitStore& store,
                                             optim::AdamW& optimizer);

/// The name of the first parameter whose gradient holds an inf or NaN ("" when none does).
std::string first_nonfinite_gradient(const models::UnitStore& store);

}  // namespace coat::train
