// Fully sharded data parallelism (FSDP / ZeRO-3) as unit hooks (models/unit_hooks.h) over a sharded
// UnitStore: each rank keeps 1/N of every unit (masters, compute copy, gradient, optimizer states); a unit is
// all-gathered whole (in the compute dtype; a unit whose linears all run FP8 as FP8 codes instead, with
// dist.fp8_all_gather: dist/fp8_gather.h) before its forward and again before its backward, freed after
// each when dist.reshard_after_forward is set, and its whole gradient is reduce-scattered into the owners'
// slices as soon as its backward ends, summed over the micro-batches of a step.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "coat/dist/communicator.h"
#include "coat/dist/fp8_gather.h"
#include "coat/models/unit_hooks.h"
#include "coat/models/unit_store.h"

namespace coat::dist {

struct FsdpOptions {
  /// Free a gathered unit after its forward (gather it again for the backward); false keeps it until its
  /// backward has run (more memory, one all-gather less per unit and micro-batch).
  bool reshard_after_forward = true;
  /// Units whose linears all run FP8 are gathered as FP8 codes (dist/fp8_gather.h): half the bytes, and the
  /// codes and scales one process would quantise. For the fp8, coat and fp8_block recipes.
  bool fp8_all_gather = false;
  /// With fp8_all_gather: the recipe's weight scaling (fp8_block: Block128x128), which the gathered codes and
  /// the FP8 cache they fill follow.
  Fp8WeightScaling fp8_scaling = Fp8WeightScaling::PerTensor;
  /// The dtype gradients are reduce-scattered in (and summed over replicas): none, the gradients' own; or BF16
  /// (half the bytes; each micro-batch's gradient is rounded to BF16 before the sum, which is added to the slice).
  std::optional<DType> reduce_dtype;
  /// Units whose all-gathers are issued ahead of their use, in the order the first forward and backward used
  /// the units: while unit i computes, units i+1 ... i+prefetch are on their way (with NCCL, on its stream; MPI's
  /// collectives finish before they return, so there it only moves them earlier). 0: each unit is gathered when
  /// it is needed. Each prefetched unit is one more gathered unit in memory.
  int64_t prefetch = 0;
};

class FsdpUnits final : public models::UnitHooks {
 public:
  /// `store` must be sharded over the ranks of `comm` (StoreOptions::shard with comm's rank and world).
  /// `replicate` (hybrid sharding, may be null): the ranks that hold the same slices; each slice's gradient is
  /// summed over them after the reduce-scatter. All must outlive the hooks.
  FsdpUnits(models::UnitStore& store, Communicator& comm, FsdpOptions options = {},
            Communicator* replicate = nullptr);

  void before_forward(size_t unit) override;
  void after_forward(size_t unit) override;
  void before_backward(size_t unit) override;
  void after_backward(size_t unit) override;

  /// Bytes this rank received in all-gathers so far (the whole units less its own slices).
  int64_t bytes_gathered() const { return bytes_gathered_; }
  /// Bytes this rank sent in reduce-scatters so far.
  int64_t bytes_reduced() const { return bytes_reduced_; }
  /// All-gathers issued ahead of their unit's use so far (FsdpOptions::prefetch).
  int64_t gathers_ahead() const { return gathers_ahead_; }

 private:
  /// A unit's all-gather in flight: BF16 (whole, work) or FP8 codes (fp8), and the weights version it gathers.
  struct InFlight {
    Tensor whole;
    CommWork work;
    std::optional<Fp8Gathering> fp8;
    int64_t version = -1;
  };
  /// Issues unit `unit`'s all-gather unless it is bound or already in flight.
  void start_gather(size_t unit);
  /// Unit `unit` gathered whole and bound to the store (its all-gather issued now unless in flight; a gather
  /// issued for weights that changed since is dropped and made again).
  void gather(size_t unit);
  /// Issues the all-gathers of the `options_.prefetch` units after `unit` in `order`.
  void prefetch_after(const std::vector<size_t>& order, size_t unit);
  /// Records the forward and backward orders of the first micro-batch (the prefetches follow them).
  void enter_phase(bool backward, size_t unit);

  models::UnitStore& store_;
  Communicator& comm_;
  FsdpOptions options_;
  Communicator* replicate_ = nullptr;
  std::unique_ptr<Fp8UnitGather> fp8_;  ///< set with FsdpOptions::fp8_all_gather
  std::vector<Tensor> grads_;  ///< per unit: the whole (padded) gradient buffer while its backward runs
  std::vector<std::optional<InFlight>> in_flight_;  ///< per unit
  std::vector<size_t> forward_order_, backward_order_;
  bool forward_known_ = false, backward_known_ = false, in_backward_ = false;
  int64_t bytes_gathered_ = 0;
  int64_t bytes_reduced_ = 0;
  int64_t gathers_ahead_ = 0;
};

}  // namespace coat::dist
