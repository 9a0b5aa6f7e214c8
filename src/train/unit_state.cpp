// Optimizer buffers, checkpoint layouts and slices, and checkpoint loads of whole or sharded units.
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

/// Unit elements an entry of state tensor "<unit>.<suffix>" stands for: one for the codes, a state group for
/// the group metadata (scales, exponents, centres).
int64_t elements_per_entry(const std::string& suffix, const optim::AdamWConfig& config) {
  if (suffix == "exp_avg" || suffix == "exp_avg_sq") return 1;
  return suffix.rfind("exp_avg_sq", 0) == 0 ? config.exp_avg_sq.group_size : config.exp_avg.group_size;
}

/// The optimizer's states of each unit, as (suffix after "<unit>.", live tensor), units in store order.
std::vector<std::vector<std::pair<std::string, Tensor>>> states_by_unit(const models::UnitStore& store,
                                                                        const optim::AdamW& optimizer) {
  std::vector<std::vector<std::pair<std::string, Tensor>>> out(store.units().size());
  size_t unit = 0;
  for (const auto& [name, t] : optimizer.state_tensors()) {
    unit = unit_of_state(store, name, unit);
    const std::string prefix = store.units()[unit].name + ".";
    COAT_CHECK(name.rfind(prefix, 0) == 0, Error, "[checkpoint] optimizer state '", name,
               "' belongs to no unit");
    out[unit].emplace_back(name.substr(prefix.size()), t);
  }
  return out;
}

/// The elements of unit `unit` that shard rank `rank` holds (all of them in a whole store).
io::UnitSlice slice_of(const models::UnitStore& store, size_t unit, int rank) {
  const int64_t numel = store.layout(unit).numel;
  if (!store.sharding()) return {0, numel};
  models::ShardSpec spec = *store.sharding();
  spec.rank = rank;
  const models::UnitShard shard = models::UnitShard::of(numel, spec);
  return {shard.begin, shard.owned};
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
      // The step's maxima where the unit's FP8 weights are quantised per tensor from these masters
      // (UnitStore::put_step_maxima): the weights' amax pass is then part of the update's.
      Tensor maxima;
      if (u.fp8_linears && u.fp8_per_tensor) {
        const int64_t granules = ops::step_maxima_count(u.master.numel());
        maxima = Tensor::empty(u.master.context(), {granules}, DType::F32, MemoryCategory::Weights);
      }
      buffers.push_back({u.name, u.master, u.grad, ranges, compute, maxima});
    }
  }
  return buffers;
}

io::CheckpointUnit checkpoint_unit(const models::UnitLayout& layout) {
  io::CheckpointUnit unit{layout.name, layout.numel, {}};
  for (size_t i = 0; i < layout.params.size(); ++i) {
    unit.params.push_back({layout.params[i].first, layout.params[i].second, layout.offsets[i]});
  }
  return unit;
}

io::CheckpointLayout checkpoint_layout(const models::UnitStore& store, const optim::AdamW& optimizer) {
  io::CheckpointLayout layout;
  for (size_t k = 0; k < store.units().size(); ++k) layout.units.push_back(checkpoint_unit(store.layout(k)));
  layout.kinds.push_back({"master", store.dtype(), 1});
  const auto states = states_by_unit(store, optimizer);
  if (!states.empty()) {
    for (const auto& [suffix, t] : states.front()) {
      layout.kinds.push_back({suffix, t.dtype(), elements_per_entry(suffix, optimizer.config())});
    }
  }
  for (const auto& unit_states : states) {
    COAT_CHECK(unit_states.size() + 1 == layout.kinds.size(), Error,
               "[checkpoint] units have different optimizer states");
  }
  const int files = store.sharding() ? store.sharding()->world : 1;
  for (int r = 0; r < files; ++r) {
    std::vector<io::UnitSlice> slices;
    for (size_t k = 0; k < store.units().size(); ++k) slices.push_back(slice_of(store, k, r));
    layout.files.push_back(std::move(slices));
  }
  return layout;
}

std::vector<std::pair<std::string, Tensor>> checkpoint_slices(const models::UnitStore& store,
                                                              const optim::AdamW& optimizer) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  const int rank = store.sharding() ? store.sharding()->rank : 0;
  const auto states = states_by_unit(store, optimizer);
  for (size_t k = 0; k < store.units().size(); ++k) {
    const models::ParamUnit& u = store.units()[k];
    const io::UnitSlice slice = slice_of(store, k, rank);
    if (slice.owned == 0) continue;
    tensors.emplace_back(io::unit_tensor_name(u.name, "master"), u.master.slice(0, 0, slice.owned));
    for (const auto& [suffix, t] : states[k]) {
      const io::EntrySpan span =
          io::entries_of_slice(slice.begin, slice.owned, elements_per_entry(suffix, optimizer.config()));
      COAT_CHECK(span.count <= t.numel(), Error, "[checkpoint] state '", u.name, ".", suffix, "' has ",
                 t.numel(), " entries, fewer than the ", span.count, " of this rank's slice");
      tensors.emplace_back(io::unit_tensor_name(u.name, suffix), t.slice(0, 0, span.count));
    }
  }
  return tensors;
}

// Both loads gather their reads into one batch: the checkpoint verifies and copies it on its io_threads.
void load_masters(models::UnitStore& store, const io::CheckpointReader& file) {
  if (!store.sharding()) {
    std::vector<std::pair<std::string, Tensor>> reads;
    for (nn::Parameter& p : store.parameters()) reads.emplace_back(p.name, p.master);
    file.read_into(reads);
    return;
  }
  std::vector<io::CheckpointRangeRead> reads;
  for (size_t k = 0; k < store.units().size(); ++k) {
    models::ParamUnit& u = store.units()[k];
    const models::UnitLayout& layout = store.layout(k);
    const int64_t begin = u.shard.begin, end = u.shard.begin + u.shard.owned;
    for (size_t i = 0; i < layout.params.size(); ++i) {
      const int64_t p_begin = layout.offsets[i], p_end = p_begin + shape_numel(layout.params[i].second);
      const int64_t lo = std::max(begin, p_begin), hi = std::min(end, p_end);
      if (lo >= hi) continue;
      reads.push_back({layout.params[i].first, lo - p_begin, u.master.slice(0, lo - begin, hi - begin)});
    }
  }
  file.read_ranges_into(reads);
}

void load_state_slices(const models::UnitStore& store, const optim::AdamW& optimizer,
                       const io::CheckpointReader& file) {
  if (!store.sharding()) {
    std::vector<std::pair<std::string, Tensor>> reads;
    for (auto& [name, t] : optimizer.state_tensors()) reads.emplace_back(name, t);
    file.read_into(reads);
    return;
  }
  std::vector<io::CheckpointRangeRead> reads;
  size_t unit = 0;
  for (auto& [name, t] : optimizer.state_tensors()) {
    unit = unit_of_state(store, name, unit);
    const models::UnitShard& shard = store.units()[unit].shard;
    const int64_t whole = whole_state_numel(shard, t.numel()), start = state_begin(shard, t.numel());
    const int64_t count = std::clamp<int64_t>(whole - start, 0, t.numel());
    Tensor slice = t;  // a view of the live state
    if (count > 0) reads.push_back({name, start, slice.slice(0, 0, count)});
    if (count < t.numel()) {
      // The padding past the unit's end holds what a fresh moment holds there: zero, but an expansion exponent
      // of 1 (ops::make_moment; 0 would index the expansion tables at row -1).
      Tensor tail = slice.slice(0, count, t.numel());
      const bool expo = name.size() >= 5 && name.compare(name.size() - 5, 5, ".expo") == 0;
      ops::fill_(tail, expo ? 1.0 : 0.0);
    }
  }
  file.read_ranges_into(reads);
}

}  // namespace coat::train
