// FSDP's gathers, frees and reduce-scatters at unit boundaries.
#include "coat/dist/fsdp.h"

#include "coat/core/nvtx.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/elementwise.h"

namespace coat::dist {

FsdpUnits::FsdpUnits(models::UnitStore& store, Communicator& comm, FsdpOptions options, Communicator* replicate)
    : store_(store), comm_(comm), options_(options), replicate_(replicate), grads_(store.units().size()) {
  const auto& spec = store_.sharding();
  COAT_ARG_CHECK(spec.has_value() && spec->rank == comm_.rank() && spec->world == comm_.world_size(), "FsdpUnits",
                 "the store must be sharded over the communicator's ", comm_.world_size(), " ranks (rank ",
                 comm_.rank(), ")");
  if (options_.fp8_all_gather) fp8_ = std::make_unique<Fp8UnitGather>(store_, comm_);
  COAT_ARG_CHECK(!options_.reduce_dtype || *options_.reduce_dtype == store_.dtype() ||
                     *options_.reduce_dtype == DType::BF16,
                 "FsdpUnits", "gradients are reduced in ", dtype_name(store_.dtype()), " or bf16, not ",
                 dtype_name(options_.reduce_dtype.value_or(store_.dtype())));
}

void FsdpUnits::gather(size_t unit) {
  models::ParamUnit& u = store_.units().at(unit);
  if (u.value.defined() || u.loose_value.defined()) return;
  if (fp8_ && u.fp8_linears) {
    bytes_gathered_ += fp8_->gather(unit);
    return;
  }
  const NvtxRange range("all_gather unit", static_cast<int64_t>(unit));
  Tensor whole = Tensor::empty(store_.context(), {u.shard.padded_numel()}, store_.compute_dtype(),
                               MemoryCategory::Communication);
  comm_.all_gather(u.compute_shard, whole).wait();
  bytes_gathered_ += (whole.numel() - u.compute_shard.numel()) * static_cast<int64_t>(dtype_size(whole.dtype()));
  store_.bind_value(unit, whole);
}

void FsdpUnits::before_forward(size_t unit) { gather(unit); }

void FsdpUnits::after_forward(size_t unit) {
  if (options_.reshard_after_forward) store_.release_value(unit);
}

void FsdpUnits::before_backward(size_t unit) {
  gather(unit);
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
