// AdamW over flat parameter buffers (one per model unit): global gradient norm, non-finite detection,
// clipping, weight decay over ranges of each buffer, moments stored in FP32, BF16, FP8 or FP8 with COAT's
// dynamic range expansion (ops/quantized_moment.h), and the states exposed by name for checkpoints.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "coat/core/tensor.h"
#include "coat/ops/quantized_moment.h"
#include "coat/optim/param_group.h"

namespace coat::optim {

struct AdamWConfig {
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;    ///< applied inside each buffer's decay ranges
  float clip_grad_norm = 0.0f;  ///< max global L2 norm of the gradients; 0: no clipping
  ops::MomentSpec exp_avg{};     ///< storage of the first moment m
  ops::MomentSpec exp_avg_sq{};  ///< storage of the second moment v
};

/// One flat buffer the optimizer updates in one fused pass: a model unit's master weights and gradients.
struct OptimBuffer {
  std::string name;                      ///< unique; names the states ("<name>.exp_avg", "<name>.exp_avg_sq", ...)
  Tensor param;                          ///< F32, contiguous, 1-D
  Tensor grad;                           ///< F32, contiguous, same numel and device as param
  std::vector<ops::DecayRange> decay;    ///< sorted, disjoint element ranges where weight decay applies
  Tensor compute;                        ///< optional BF16 copy of param refreshed by each step (same pass on CUDA)
  /// Optional F32 [ceil(numel / ops::kStepMaximaGranule)]: max |param| per granule, written by each update
  /// (same pass on CUDA; ops::adamw_step_quantized). Valid after a step that was not skipped.
  Tensor maxima{};
};

/// The buffers of a model's flat units: one OptimBuffer per unit, its decay ranges from the parameters'
/// decay flags (views into the unit), adjacent ranges merged (the zero padding between parameters stays
/// zero under any update).
struct UnitView {
  std::string name;
  Tensor master;  ///< the unit's flat F32 master buffer
  Tensor grad;    ///< the unit's flat F32 gradient buffer
  std::vector<std::pair<Tensor, bool>> params;  ///< (view into master, decay) per parameter
  Tensor compute; ///< optional: the unit's BF16 compute copy, refreshed by every step
};
std::vector<OptimBuffer> make_buffers(const std::vector<UnitView>& units);

/// A parameter's element range [begin, end) in its unit and whether weight decay applies to it.
struct ParamSpan {
  int64_t begin = 0, end = 0;
  bool decay = false;
};
/// A unit's decay ranges: the spans with decay, consecutive decayed ones merged over the zero padding between
/// them (make_buffers' ranges).
std::vector<ops::DecayRange> merge_decay_ranges(std::vector<ParamSpan> spans);
/// The ranges inside elements [begin, begin + length) of the unit, shifted to start at 0: the decay ranges of
/// a rank's slice of a sharded unit.
std::vector<ops::DecayRange> slice_decay_ranges(const std::vector<ops::DecayRange>& ranges, int64_t begin,
                                                int64_t length);

struct StepStats {
  double grad_norm = 0.0;  ///< global L2 norm of all gradients before clipping (inf/NaN if non-finite)
  bool clipped = false;    ///< gradients were scaled down (clip factor < 1)
  bool skipped = false;    ///< the norm was not finite: nothing was modified and the step count is unchanged
  /// Per-buffer step (end_step): the first buffer, in the order update_buffer took them, whose gradient was
  /// not finite; none when every gradient was finite (skipped may still be set by skip_if_nonfinite).
  std::optional<size_t> first_nonfinite_buffer;
};

class AdamW {
 public:
  /// Validates the buffers (defined F32 contiguous 1-D param and grad of one numel on one device, unique
  /// non-empty names, decay ranges sorted and inside) and the config, and allocates zero moments for each
  /// buffer on its device in the configured storage (MemoryCategory::OptimizerState).
  AdamW(std::vector<OptimBuffer> buffers, AdamWConfig config);
  /// Each segment its own buffer (decay over the whole segment or nothing), named by the segment.
  AdamW(const std::vector<OptimSegment>& segments, AdamWConfig config);

  /// One step with learning rate lr:
  ///  1. grad_norm = sqrt(sum over buffers of ops::sum_squares(grad)) (double; one device read-back);
  ///  2. if grad_norm is not finite: returns {grad_norm, false, true} with parameters, moments and step
  ///     count untouched (the caller decides whether to stop or go on);
  ///  3. clip factor = min(1, clip_grad_norm / (grad_norm + 1e-6)) when clipping is on (as
  ///     torch.nn.utils.clip_grad_norm_), passed to the update as grad_scale (gradients are not modified);
  ///  4. ops::adamw_step_quantized on each buffer: ONE fused pass per buffer (bias correction with
  ///     step_count() + 1), then step count += 1. With FP32 moments the bits equal ops::adamw_step's.
  StepStats step(float lr);

  /// The same step one buffer at a time, for the optimizer applied during the backward (each buffer as soon
  /// as its gradients are complete, so that the gradient memory can be reused): begin_step, then
  /// update_buffer for every buffer in any order, then end_step. No clipping (the global norm is known only
  /// at the end): begin_step refuses a config with clip_grad_norm > 0.
  /// Nothing is read back before end_step: update_buffer puts the buffer's sum of squares into a device slot
  /// and sets a device skip flag when it is not finite; the update it queues reads the flag on the device
  /// and writes nothing once it is set. So when a buffer's gradient is not finite, that buffer and every one
  /// updated after it in this step stay untouched (param, moments, compute copy). skip_if_nonfinite(loss)
  /// sets the same flag from a non-finite loss, before any buffer is updated. end_step reads the sums and the
  /// flag once, returns the global norm (the buffers' sums added on the host in buffer order, as step() adds
  /// them), skipped = the flag, and the first non-finite buffer in update order; the step count advances
  /// when the flag is clear. With the same gradients and clipping off the bits equal step()'s.
  void begin_step(float lr);
  void skip_if_nonfinite(const Tensor& loss_sum);
  void update_buffer(size_t i);
  StepStats end_step();
  /// Closes an open per-buffer step without stepping (the loss was not finite, or the backward threw): the
  /// step count stays. Buffers already updated in it keep their update. Never throws.
  void cancel_step() noexcept { pending_.open = false; }

  /// The global gradient norm alone (step 1 above), without updating anything.
  double grad_norm() const;
  /// Buffers that are ranks' slices of sharded units: `reduce` sums a one-element F64 tensor of sums of
  /// squares over the ranks in place (an all-reduce), so that the norm, the clipping and the skip decision are
  /// global and the same on every rank. Called once per step(), and once per buffer in update_buffer.
  void set_sum_reduction(std::function<void(Tensor&)> reduce) { reduce_sums_ = std::move(reduce); }

  /// For every buffer in order: "<name>.exp_avg" (+ ".scale", ".expo", ".center" where the storage has
  /// them) and the same for "<name>.exp_avg_sq": views of the live states (write into them to restore).
  std::vector<std::pair<std::string, Tensor>> state_tensors() const;
  /// The moments of buffer i decoded to F32 (for studies and tests).
  Tensor exp_avg_f32(size_t i) const;
  Tensor exp_avg_sq_f32(size_t i) const;
  /// Bytes of all optimizer states (codes and group metadata).
  size_t state_bytes() const;
  /// Completed (not skipped) steps; the next step uses step_count() + 1 for bias correction.
  int64_t step_count() const { return step_count_; }
  void set_step_count(int64_t steps);

  const std::vector<OptimBuffer>& buffers() const { return buffers_; }
  const AdamWConfig& config() const { return config_; }

 private:
  struct State {
    ops::QuantizedMoment exp_avg;
    ops::QuantizedMoment exp_avg_sq;
  };

  std::vector<OptimBuffer> buffers_;
  std::vector<State> states_;
  AdamWConfig config_;
  int64_t step_count_ = 0;
  std::function<void(Tensor&)> reduce_sums_;
  /// One buffer's update with the given learning rate, step and gradient scale; `skip` as in
  /// ops::adamw_step_quantized.
  void update(size_t i, float lr, int64_t step, float grad_scale, const Tensor* skip = nullptr);

  /// The device state of a per-buffer step, allocated at the first begin_step on the buffers' device.
  struct PerBufferStep {
    bool open = false;
    float lr = 0.0f;
    Tensor sums;  ///< F64 [buffers + 1]: each buffer's sum of squares, then the skip flag (end_step's one read)
    Tensor skip;  ///< I32 [1]: set once a gradient or the loss was not finite; the update kernels read it
    std::vector<size_t> order;  ///< the buffers in the order update_buffer took them
  } pending_;
};

}  // namespace coat::optim
