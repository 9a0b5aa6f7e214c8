// Optimizer buffers and checkpoint tensors of whole or sharded units.
#include "coat/train/unit_state.h"

#include <algorithm>

#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/runtime.h"

namespace coat::train {

namespace {

/// A sharded state tensor of `shard_len` elements per rank holds, in one process, this many: the unit's
/// elements (codes, F32/BF16 moments) or its groups (FP8 group metadata: shard_numel / shard_len elements
/// a group, and shard boundaries lie on group boundaries).
int64_t whole_state_numel(const models::UnitShard& shard, int64_t shard_len) {
  const int64_t per_element = shard.shard_numel / shard_len;
  return (shard.numel + per_element - 1) / per_element;
}

/// The first element of this rank's slice in the whole state tensor.
int64_t state_begin(const models::UnitShard& shard, int64_t shard_len) {
  return shard.begin / (shard.shard_numel / shard_len);
}

/// The unit whose state `name` is ("<unit>.exp_avg..."), searched from `unit` on: state_tensors() lists the
/// buffers (units) in order, each unit's states together.
size_t unit_of_state(const models::UnitStore& store, const std::string& name, size_t unit) {
  while (unit + 1 < store.units().size() && name.rfind(store.units()[unit].name + ".", 0) != 0) ++unit;
  return unit;
}

/// The whole of a sharded 1-D tensor (every rank's `slice`, `whole_numel` elements kept) in host memory.
Tensor gather_to_host(dist::Communicator& comm, const Tensor& slice, int64_t whole_numel, const ContextPtr& host) {
  Tensor whole = Tensor::empty(slice.context(), {slice.numel() * comm.world_size()}, slice.dtype(),
                               MemoryCategory::Communication);
  comm.all_gather(slice, whole).wait();
  return ops::to(whole.slice(0, 0, whole_numel), host);
}

}  // namespace

std::vector<optim::OptimBuffer> unit_buffers(models::UnitStore& store,
                                             const std::function<bool(const std::string&)>& decays) {
  std::vector<optim::OptimBuffer> buffers;
  for (size_t k = 0; k < store.units().size(); ++k) {
    models::ParamUnit& u = store.units()[k];
    const models::UnitLayout& layout = store.layout(k);
    std::vector<optim::ParamSpan> spans;
    for (size_t i = 0; i < layout.params.size(); ++i) {
      const int64_t begin = layout.offsets[i];
      spans.push_back({begin, begin + shape_numel(layout.params[i].second), decays(layout.params[i].first)});
    }
    const auto ranges = optim::merge_decay_ranges(std::move(spans));
    if (store.sharding()) {
      const Tensor compute = u.compute_shard.shares_storage_with(u.master) ? Tensor() : u.compute_shard;
      buffers.push_back({u.name, u.master, u.grad_shard,
                         optim::slice_decay_ranges(ranges, u.shard.begin, u.shard.shard_numel), compute});
    } else {
      // With a BF16 compute copy the optimizer refreshes it in its own pass (no sync_compute_weights after a
      // step; the separate copies of a unit without a full one are refreshed by weights_changed).
      const Tensor compute = !u.value.defined() || u.value.shares_storage_with(u.master) ? Tensor() : u.value;
      buffers.push_back({u.name, u.master, u.grad, ranges, compute});
    }
  }
  return buffers;
}

std::vector<std::pair<std::string, Tensor>> checkpoint_tensors(const models::UnitStore& store,
                                                               const optim::AdamW& optimizer,
                                                               dist::Communicator* comm) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  if (!store.sharding()) {
    for (const nn::Parameter& p : store.parameters()) tensors.emplace_back(p.name, p.master);
    for (auto& s : optimizer.state_tensors()) tensors.push_back(s);
    return tensors;
  }
  COAT_ARG_CHECK(comm != nullptr, "checkpoint_tensors", "a sharded store needs its communicator");
  const ContextPtr host = ops::make_context(Device::cpu());
  for (size_t k = 0; k < store.units().size(); ++k) {
    const models::ParamUnit& u = store.units()[k];
    const Tensor whole = gather_to_host(*comm, u.master, u.shard.numel, host);
    const models::UnitLayout& layout = store.layout(k);
    for (size_t i = 0; i < layout.params.size(); ++i) {
      const Shape& shape = layout.params[i].second;
      tensors.emplace_back(layout.params[i].first,
                           whole.slice(0, layout.offsets[i], layout.offsets[i] + shape_numel(shape)).reshape(shape));
    }
  }
  size_t unit = 0;
  for (const auto& [name, t] : optimizer.state_tensors()) {
    unit = unit_of_state(store, name, unit);
    const models::UnitShard& shard = store.units()[unit].shard;
    tensors.emplace_back(name, gather_to_host(*comm, t, whole_state_numel(shard, t.numel()), host));
  }
  return tensors;
}

void load_masters(models::UnitStore& store, const io::TensorFileReader& file) {
  if (!store.sharding()) {
    for (nn::Parameter& p : store.parameters()) file.read_into(p.name, p.master);
    return;
  }
  for (size_t k = 0; k < store.units().size(); ++k) {
    models::ParamUnit& u = store.units()[k];
    const models::UnitLayout& layout = store.layout(k);
    const int64_t begin = u.shard.begin, end = u.shard.begin + u.shard.owned;
    for (size_t i = 0; i < layout.params.size(); ++i) {
      const int64_t p_begin = layout.offsets[i], p_end = p_begin + shape_numel(layout.params[i].second);
      const int64_t lo = std::max(begin, p_begin), hi = std::min(end, p_end);
      if (lo >= hi) continue;
      Tensor dst = u.master.slice(0, lo - begin, hi - begin);
      file.read_slice_into(layout.params[i].first, lo - p_begin, dst);
    }
  }
}

void load_state_slices(const models::UnitStore& store, const optim::AdamW& optimizer,
                       const io::TensorFileReader& file) {
  COAT_ARG_CHECK(store.sharding().has_value(), "load_state_slices", "the store is not sharded");
  size_t unit = 0;
  for (auto& [name, t] : optimizer.state_tensors()) {
    unit = unit_of_state(store, name, unit);
    const models::UnitShard& shard = store.units()[unit].shard;
    const int64_t whole = whole_state_numel(shard, t.numel()), start = state_begin(shard, t.numel());
    const int64_t count = std::clamp<int64_t>(whole - start, 0, t.numel());
    Tensor slice = t;  // a view of the live state
    if (count > 0) {
      Tensor head = slice.slice(0, 0, count);
      file.read_slice_into(name, start, head);
    }
    if (count < t.numel()) {
      Tensor tail = slice.slice(0, count, t.numel());
      ops::fill_(tail, 0.0);
    }
  }
}

}  // namespace coat::train
