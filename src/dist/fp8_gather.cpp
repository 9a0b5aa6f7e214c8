// FP8 all-gather of sharded units: slice maxima, one all-reduce, codes gathered, transposes made locally.
#include "coat/dist/fp8_gather.h"

#include <algorithm>

#include "coat/core/nvtx.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/quantize.h"
#include "coat/ops/reduce.h"

namespace coat::dist {
namespace {

/// The part of [begin, end) inside [lo, hi), as a (possibly empty) range.
std::pair<int64_t, int64_t> overlap(int64_t begin, int64_t end, int64_t lo, int64_t hi) {
  const int64_t a = std::max(begin, lo), b = std::min(end, hi);
  return {a, std::max(a, b)};
}

}  // namespace

Fp8UnitGather::Fp8UnitGather(models::UnitStore& store, Communicator& comm)
    : store_(store), comm_(comm), scales_(store.units().size()) {
  COAT_ARG_CHECK(store_.sharding().has_value() && store_.compute_dtype() == DType::BF16 &&
                     store_.dtype() == DType::F32,
                 "Fp8UnitGather", "needs a sharded store with FP32 masters and BF16 compute");
}

void Fp8UnitGather::refresh_scales() {
  if (version_ == store_.weights_version()) return;
  const NvtxRange range("fp8_gather scales");
  std::vector<std::pair<size_t, std::vector<models::Fp8Operand>>> units;
  int64_t count = 0;
  for (size_t k = 0; k < store_.units().size(); ++k) {
    if (!store_.units()[k].fp8_linears) continue;
    units.emplace_back(k, store_.fp8_operands(k));
    count += static_cast<int64_t>(units.back().second.size());
  }
  Tensor maxima = ops::zeros(store_.context(), {std::max<int64_t>(count, 1)}, DType::F32, MemoryCategory::Communication);
  int64_t at = 0;
  for (const auto& [k, operands] : units) {
    const models::ParamUnit& u = store_.units()[k];
    for (const models::Fp8Operand& op : operands) {
      const auto [lo, hi] = overlap(op.offset, op.offset + op.numel(), u.shard.begin, u.shard.begin + u.shard.owned);
      if (hi > lo) {
        Tensor slot = maxima.slice(0, at, at + 1);
        ops::copy_(slot, ops::amax(u.master.slice(0, lo - u.shard.begin, hi - u.shard.begin)));
      }
      ++at;
    }
  }
  comm_.all_reduce(maxima, ReduceOp::Max).wait();
  at = 0;
  for (const auto& [k, operands] : units) {
    scales_[k].clear();
    for (size_t i = 0; i < operands.size(); ++i, ++at)
      scales_[k].push_back(ops::fp8_scale_from_maxima(maxima.slice(0, at, at + 1), DType::E4M3, MemoryCategory::Weights));
  }
  version_ = store_.weights_version();
}

Tensor Fp8UnitGather::quantize_slice(size_t unit, const std::vector<models::Fp8Operand>& operands) {
  const models::ParamUnit& u = store_.units()[unit];
  Tensor codes = ops::zeros(store_.context(), {u.shard.shard_numel}, DType::E4M3, MemoryCategory::Communication);
  for (size_t i = 0; i < operands.size(); ++i) {
    const models::Fp8Operand& op = operands[i];
    const auto [lo, hi] = overlap(op.offset, op.offset + op.numel(), u.shard.begin, u.shard.begin + u.shard.owned);
    if (hi <= lo) continue;
    const Tensor piece = u.master.slice(0, lo - u.shard.begin, hi - u.shard.begin);
    Tensor dst = codes.slice(0, lo - u.shard.begin, hi - u.shard.begin);
    ops::copy_(dst, ops::quantize_per_tensor_with_scale(piece, DType::E4M3, scales_[unit].at(i).first).codes);
  }
  return codes;
}

std::vector<std::pair<int64_t, int64_t>> Fp8UnitGather::loose_ranges(size_t unit) const {
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (size_t index : store_.units()[unit].loose) {
    const int64_t offset = store_.param_offset(unit, index);
    ranges.emplace_back(offset, offset + shape_numel(store_.param_shape(unit, index)));
  }
  return ranges;
}

namespace {

/// fn(lo, hi, at) for each part [lo, hi) of the ranges inside [begin, end), `at` its place in their concatenation.
template <typename Fn>
void for_each_piece(const std::vector<std::pair<int64_t, int64_t>>& ranges, int64_t begin, int64_t end, Fn&& fn) {
  int64_t at = 0;
  for (const auto& [offset, stop] : ranges) {
    const auto [lo, hi] = overlap(offset, stop, begin, end);
    if (hi > lo) fn(lo, hi, at + lo - offset);
    at += stop - offset;
  }
}

int64_t total_length(const std::vector<std::pair<int64_t, int64_t>>& ranges) {
  int64_t total = 0;
  for (const auto& [offset, stop] : ranges) total += stop - offset;
  return total;
}

}  // namespace

void Fp8UnitGather::start_loose(Fp8Gathering& g) {
  const models::ParamUnit& u = store_.units()[g.unit];
  const auto ranges = loose_ranges(g.unit);
  const int64_t total = total_length(ranges);
  const DType dtype = store_.compute_dtype();
  // This rank's part of every vector at its place in the concatenation (zero elsewhere).
  g.loose_mine = ops::zeros(store_.context(), {total}, dtype, MemoryCategory::Communication);
  g.loose = Tensor::empty(store_.context(), {total * comm_.world_size()}, dtype, MemoryCategory::Communication);
  if (total == 0) return;
  for_each_piece(ranges, u.shard.begin, u.shard.begin + u.shard.owned, [&](int64_t lo, int64_t hi, int64_t at) {
    Tensor dst = g.loose_mine.slice(0, at, at + hi - lo);
    ops::copy_(dst, u.compute_shard.slice(0, lo - u.shard.begin, hi - u.shard.begin));
  });
  g.loose_work = comm_.all_gather(g.loose_mine, g.loose);
  g.received += total * (comm_.world_size() - 1) * static_cast<int64_t>(dtype_size(dtype));
}

Tensor Fp8UnitGather::finish_loose(const Fp8Gathering& g) {
  const models::ParamUnit& u = store_.units()[g.unit];
  const auto ranges = loose_ranges(g.unit);
  const int64_t total = total_length(ranges);
  Tensor whole = Tensor::empty(store_.context(), {total}, store_.compute_dtype(), MemoryCategory::Communication);
  for (int r = 0; r < comm_.world_size(); ++r) {
    const int64_t begin = u.shard.shard_numel * r;
    for_each_piece(ranges, begin, begin + u.shard.shard_numel, [&](int64_t lo, int64_t hi, int64_t at) {
      Tensor dst = whole.slice(0, at, at + hi - lo);
      ops::copy_(dst, g.loose.slice(0, total * r + at, total * r + at + hi - lo));
    });
  }
  return whole;
}

Fp8Gathering Fp8UnitGather::start(size_t unit) {
  models::ParamUnit& u = store_.units().at(unit);
  COAT_ARG_CHECK(u.fp8_linears, "Fp8UnitGather", "unit '", u.name, "' has linears that do not run FP8");
  const NvtxRange range("fp8 all_gather unit", static_cast<int64_t>(unit));
  refresh_scales();
  Fp8Gathering g;
  g.unit = unit;
  g.codes_mine = quantize_slice(unit, store_.fp8_operands(unit));
  g.codes = Tensor::empty(store_.context(), {u.shard.padded_numel()}, DType::E4M3, MemoryCategory::Communication);
  g.codes_work = comm_.all_gather(g.codes_mine, g.codes);
  g.received = g.codes.numel() - g.codes_mine.numel();
  start_loose(g);
  return g;
}

void Fp8UnitGather::finish(Fp8Gathering& g) {
  g.codes_work.wait();
  g.loose_work.wait();
  store_.bind_loose(g.unit, finish_loose(g));
  nn::Fp8Weights& cache = store_.fp8_weights(g.unit);
  const std::vector<models::Fp8Operand> operands = store_.fp8_operands(g.unit);
  for (size_t i = 0; i < operands.size(); ++i) {
    const models::Fp8Operand& op = operands[i];
    ops::Fp8PerTensor q;
    q.codes = g.codes.slice(0, op.offset, op.offset + op.numel()).reshape({op.rows, op.cols});
    q.codes_t = ops::contiguous(q.codes.transpose(0, 1));
    q.scale = scales_[g.unit].at(i).first;
    q.scale_inv = scales_[g.unit].at(i).second;
    cache.put(*op.key, std::move(q));
  }
  g.codes_mine = g.loose_mine = Tensor();
}

int64_t Fp8UnitGather::gather(size_t unit) {
  Fp8Gathering g = start(unit);
  finish(g);
  return g.received;
}

}  // namespace coat::dist
