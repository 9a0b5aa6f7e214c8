// The two ways a step applies AdamW: after the backward, or unit by unit inside it.
#include "coat/train/step_policy.h"

#include <cmath>

#include "coat/ops/copy.h"
#include "coat/ops/reduce.h"

namespace coat::train {

std::string first_nonfinite_gradient(const models::UnitStore& store) {
  if (const auto& spec = store.sharding()) {
    // This rank holds slices of the units' gradients: name the unit (other ranks may name other units).
    for (const models::ParamUnit& u : store.units()) {
      if (!std::isfinite(ops::to_double_vector(ops::amax(u.grad_shard))[0]))
        return "the gradient of unit '" + u.name + "' (rank " + std::to_string(spec->rank) + "'s slice)";
    }
    return "";
  }
  for (const nn::Parameter& p : store.parameters()) {
    const double a = ops::to_double_vector(ops::amax(p.grad))[0];
    if (!std::isfinite(a)) return p.name;
  }
  return "";
}

namespace {

const char* const kNothingUpdated = "Nothing was updated";

/// After a step: the FP8 weight copies are stale (made again at their next use); when the step ran, every
/// buffer's update also wrote its maxima, which spare those quantisations their amax pass.
void weights_stepped(models::UnitStore& store, const optim::AdamW& optimizer, bool skipped) {
  store.weights_changed();
  if (skipped) return;
  const std::vector<optim::OptimBuffer>& buffers = optimizer.buffers();
  for (size_t k = 0; k < buffers.size() && k < store.units().size(); ++k)
    if (buffers[k].maxima.defined()) store.put_step_maxima(k, buffers[k].maxima);
}

/// Accumulates the micro-batches' gradients, then one optimizer step over every unit (clipping by the
/// global norm when configured).
class UpdateAfterBackward final : public StepPolicy {
 public:
  UpdateAfterBackward(models::UnitStore& store, optim::AdamW& optimizer) : store_(store), optimizer_(optimizer) {}

  void begin(float lr) override {
    lr_ = lr;
    store_.zero_grad(/*defer_linear=*/true);
  }

  StepOutcome end(bool loss_finite) override {
    store_.finish_grads();
    if (!loss_finite) return {{}, false, "the loss", kNothingUpdated};
    StepOutcome out;
    out.stats = optimizer_.step(lr_);
    // The optimizer wrote the BF16 compute weights in the same pass as the update.
    weights_stepped(store_, optimizer_, out.stats.skipped);
    if (out.stats.skipped) out.culprit = first_nonfinite_gradient(store_);
    out.updated = kNothingUpdated;
    return out;
  }

 private:
  models::UnitStore& store_;
  optim::AdamW& optimizer_;
  float lr_ = 0.0f;
};

/// One micro-batch per step (the config checks it); each unit is updated from after_backward, when its
/// gradients are complete, and a shared block gradient buffer is zeroed again for the next block.
class UpdateInBackward final : public StepPolicy {
 public:
  UpdateInBackward(models::UnitStore& store, optim::AdamW& optimizer) : store_(store), optimizer_(optimizer) {}

  void begin(float lr) override {
    store_.zero_grad(/*defer_linear=*/true);
    optimizer_.begin_step(lr);
  }

  // The loss is not read here: the optimizer's device flag, raised by a non-finite loss, turns every update
  // queued in the backward into nothing.
  void loss_ready(const Tensor& loss_sum) override { optimizer_.skip_if_nonfinite(loss_sum); }

  // No read-back per unit: the optimizer queues the unit's norm check and its (maybe skipped) update.
  void after_backward(size_t unit) override {
    store_.finish_unit_grads(unit);
    optimizer_.update_buffer(unit);
    if (store_.shares_block_grads() && store_.units()[unit].layer >= 0) store_.zero_unit_grad(unit, true);
  }

  StepOutcome end(bool loss_finite) override {
    if (!loss_finite) {
      optimizer_.cancel_step();  // the flag the loss raised kept every update of the backward from running
      return {{}, false, "the loss", kNothingUpdated};
    }
    StepOutcome out;
    out.stats = optimizer_.end_step();
    weights_stepped(store_, optimizer_, out.stats.skipped);
    if (out.stats.first_nonfinite_buffer) {
      out.culprit = "the gradient of unit '" + store_.units()[*out.stats.first_nonfinite_buffer].name + "'";
    }
    out.updated = out.stats.skipped ? "The units whose gradients were complete before it (optim.apply_in_backward) "
                                      "kept their update; the others were not updated"
                                    : kNothingUpdated;
    return out;
  }

  void abandon() noexcept override { optimizer_.cancel_step(); }

 private:
  models::UnitStore& store_;
  optim::AdamW& optimizer_;
};

}  // namespace

std::unique_ptr<StepPolicy> make_step_policy(bool apply_in_backward, models::UnitStore& store,
                                             optim::AdamW& optimizer) {
  if (apply_in_backward) return std::make_unique<UpdateInBackward>(store, optimizer);
  return std::make_unique<UpdateAfterBackward>(store, optimizer);
}

}  // namespace coat::train
