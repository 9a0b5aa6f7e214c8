// FSDP's gathers, frees and reduce-scatters at unit boundaries.
#include "coat/dist/fsdp.h"

#include <algorithm>

#include "coat/core/nvtx.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/elementwise.h"

namespace coat::dist {

FsdpUnits::FsdpUnits(models::UnitStore& store, Communicator& comm, FsdpOptions options, Communicator* replicate)
    : store_(store),
      comm_(comm),
      options_(options),
      replicate_(replicate),
      grads_(store.units().size()),
      in_flight_(store.units().size()) {
  COAT_ARG_CHECK(options_.prefetch >= 0, "FsdpUnits", "prefetch must be >= 0, got ", options_.prefetch);
  const auto& spec = store_.sharding();
  COAT_ARG_CHECK(spec.has_value() && spec->rank == comm_.rank() && spec->world == comm_.world_size(), "FsdpUnits",
                 "the store must be sharded over the communicator's ", comm_.world_size(), " ranks (rank ",
                 comm_.rank(), ")");
  if (options_.fp8_all_gather) fp8_ = std::make_unique<Fp8UnitGather>(store_, comm_, options_.fp8_scaling);
  COAT_ARG_CHECK(!options_.reduce_dtype || *options_.reduce_dtype == store_.dtype() ||
                     *options_.reduce_dtype == DType::BF16,
                 "FsdpUnits", "gradients are reduced in ", dtype_name(store_.dtype()), " or bf16, not ",
                 dtype_name(options_.reduce_dtype.value_or(store_.dtype())));
}

void FsdpUnits::start_gather(size_t unit) {
  models::ParamUnit& u = store_.units().at(unit);
  if (u.value.defined() || u.loose_value.defined() || in_flight_[unit].has_value()) return;
  InFlight f;
  f.version = store_.weights_version();
  if (fp8_ && u.fp8_linears) {
    f.fp8 = fp8_->start(unit);
    bytes_gathered_ += f.fp8->received;
  } else {
    const NvtxRange range("all_gather unit", static_cast<int64_t>(unit));
    f.whole = Tensor::empty(store_.context(), {u.shard.padded_numel()}, store_.compute_dtype(),
                            MemoryCategory::Communication);
    f.work = comm_.all_gather(u.compute_shard, f.whole);
    bytes_gathered_ += (f.whole.numel() - u.compute_shard.numel()) * static_cast<int64_t>(dtype_size(f.whole.dtype()));
  }
  in_flight_[unit] = std::move(f);
}

void FsdpUnits::gather(size_t unit) {
  models::ParamUnit& u = store_.units().at(unit);
  if (u.value.defined() || u.loose_value.defined()) return;
  if (in_flight_[unit] && in_flight_[unit]->version != store_.weights_version()) in_flight_[unit].reset();  // stale
  start_gather(unit);
  InFlight f = std::move(*in_flight_[unit]);
  in_flight_[unit].reset();
  if (f.fp8) {
    fp8_->finish(*f.fp8);
  } else {
    f.work.wait();
    store_.bind_value(unit, f.whole);
  }
}

void FsdpUnits::prefetch_after(const std::vector<size_t>& order, size_t unit) {
  if (options_.prefetch == 0) return;
  const auto at = std::find(order.begin(), order.end(), unit);
  if (at == order.end()) return;
  for (auto next = at + 1; next != order.end() && next - at <= options_.prefetch; ++next) {
    const bool issued = !in_flight_[*next].has_value();
    start_gather(*next);
    if (issued && in_flight_[*next].has_value()) ++gathers_ahead_;
  }
}

void FsdpUnits::enter_phase(bool backward, size_t unit) {
  if (backward != in_backward_) {
    // A backward after a forward: the forward's order is known; a forward after a backward: the backward's.
    (backward ? forward_known_ : backward_known_) = true;
    in_backward_ = backward;
  }
  std::vector<size_t>& order = backward ? backward_order_ : forward_order_;
  if (!(backward ? backward_known_ : forward_known_)) order.push_back(unit);
}

void FsdpUnits::before_forward(size_t unit) {
  enter_phase(/*backward=*/false, unit);
  gather(unit);
  if (forward_known_) prefetch_after(forward_order_, unit);
}

void FsdpUnits::after_forward(size_t unit) {
  if (options_.reshard_after_forward) store_.release_value(unit);
}

void FsdpUnits::before_backward(size_t unit) {
  enter_phase(/*backward=*/true, unit);
  gather(unit);
  if (backward_known_) prefetch_after(backward_order_, unit);
  models::ParamUnit& u = store_.units().at(unit);
  // The whole gradient of this micro-batch: the linears' first GEMMs write their parts (deferred zeroing),
  // the rest is zeroed, the padding past the unit's end too (it is reduce-scattered with the rest).
  Tensor whole = Tensor::empty(store_.context(), {u.shard.padded_numel()}, store_.dtype(), MemoryCategory::Gradients);
  if (u.shard.padded_numel() > u.shard.numel) {
    Tensor tail = whole.slice(0, u.shard.numel, u.shard.padded_numel());
    ops::fill_(tail, 0.0);
  }
  grads_[unit] = whole;
  store_.bind_grad(unit, whole);
  store_.zero_unit_grad(unit, /*defer_linear=*/true);
}

void FsdpUnits::after_backward(size_t unit) {
  models::ParamUnit& u = store_.units().at(unit);
  COAT_CHECK(grads_.at(unit).defined(), Error, "[FsdpUnits] unit '", u.name,
             "' ended its backward without a gradient buffer (before_backward did not run)");
  const NvtxRange range("reduce_scatter unit", static_cast<int64_t>(unit));
  store_.finish_unit_grads(unit);
  const DType reduce_dtype = options_.reduce_dtype.value_or(store_.dtype());
  Tensor whole = reduce_dtype == store_.dtype() ? grads_[unit] : ops::cast(grads_[unit], reduce_dtype);
  store_.release_grad(unit);
  grads_[unit] = Tensor();
  Tensor reduced =
      Tensor::empty(store_.context(), {u.shard.shard_numel}, whole.dtype(), MemoryCategory::Communication);
  comm_.reduce_scatter(whole, reduced, ReduceOp::Sum).wait();
  bytes_reduced_ += whole.numel() * static_cast<int64_t>(dtype_size(reduced.dtype()));
  whole = Tensor();
  // Hybrid sharding: the replicas of this slice saw other data; their sums add up (rank order, as above).
  if (replicate_ != nullptr && replicate_->world_size() > 1) replicate_->all_reduce(reduced, ReduceOp::Sum).wait();
  if (reduced.dtype() != u.grad_shard.dtype()) reduced = ops::cast(reduced, u.grad_shard.dtype());
  ops::add_(u.grad_shard, reduced);  // the micro-batches of a step add up in the slice
  store_.release_value(unit);
}

}  // namespace coat::dist
