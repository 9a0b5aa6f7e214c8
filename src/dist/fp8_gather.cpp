// FP8 all-gather of sharded units: slice maxima (per matrix or per 128x128 block), one all-reduce, codes
// gathered, transposes made locally.
#include "coat/dist/fp8_gather.h"

#include <algorithm>
#include <tuple>

#include "coat/backend/block_scale_layout.h"
#include "coat/core/nvtx.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/quantize.h"
#include "coat/ops/quantize_block.h"
#include "coat/ops/reduce.h"

namespace coat::dist {
namespace {

/// The part of [begin, end) inside [lo, hi), as a (possibly empty) range.
std::pair<int64_t, int64_t> overlap(int64_t begin, int64_t end, int64_t lo, int64_t hi) {
  const int64_t a = std::max(begin, lo), b = std::min(end, hi);
  return {a, std::max(a, b)};
}

/// The whole block rows of a matrix with `cols` columns that its part [a, b) (offsets in the matrix) touches,
/// as a zero F32 tensor holding the part at its place: what the 128x128 quantiser takes of a slice that need
/// not begin or end on a block row.
struct PaddedBlockRows {
  int64_t first = 0;  ///< the first block row
  int64_t begin = 0;  ///< the part's first element in `rows`, flat
  Tensor rows;        ///< F32 [128 * block rows, cols]
};

PaddedBlockRows padded_block_rows(const Tensor& part, int64_t a, int64_t b, int64_t cols) {
  const int64_t block = fp8block::kBlock * cols;
  PaddedBlockRows p;
  p.first = a / block;
  p.begin = a - p.first * block;
  p.rows = ops::zeros(part.context(), {((b - 1) / block - p.first + 1) * fp8block::kBlock, cols}, DType::F32,
                      MemoryCategory::Workspace);
  Tensor dst = p.rows.flatten().slice(0, p.begin, p.begin + b - a);
  ops::copy_(dst, part);
  return p;
}

}  // namespace

Fp8UnitGather::Fp8UnitGather(models::UnitStore& store, Communicator& comm, Fp8WeightScaling scaling)
    : store_(store), comm_(comm), scaling_(scaling), scales_(store.units().size()) {
  COAT_ARG_CHECK(store_.sharding().has_value() && store_.compute_dtype() == DType::BF16 &&
                     store_.dtype() == DType::F32,
                 "Fp8UnitGather", "needs a sharded store with FP32 masters and BF16 compute");
}

int64_t Fp8UnitGather::maxima_count(const models::Fp8Operand& op) const {
  if (scaling_ == Fp8WeightScaling::PerTensor) return 1;
  COAT_ARG_CHECK(op.rows % fp8block::kBlock == 0 && op.cols % fp8block::kBlock == 0, "Fp8UnitGather",
                 "weight '", op.key->name, "' of shape ", shape_str({op.rows, op.cols}),
                 ": 128x128 block scaling needs both ", "dimensions multiples of ", fp8block::kBlock,
                 " (keep this layer in BF16: precision.bf16_layers)");
  return op.rows / fp8block::kBlock * (op.cols / fp8block::kBlock);
}

void Fp8UnitGather::part_maxima(const models::ParamUnit& u, const models::Fp8Operand& op, int64_t lo,
                                int64_t hi, Tensor slot) {
  const Tensor part = u.master.slice(0, lo - u.shard.begin, hi - u.shard.begin);
  if (scaling_ == Fp8WeightScaling::PerTensor) {
    ops::copy_(slot, ops::amax(part));
    return;
  }
  // This rank's blocks; the others' entries stay zero (no element: neutral for the maximum over the ranks).
  const PaddedBlockRows p = padded_block_rows(part, lo - op.offset, hi - op.offset, op.cols);
  const Tensor maxima = ops::amax_128x128(p.rows);
  const int64_t kblocks = op.cols / fp8block::kBlock;
  Tensor dst = slot.slice(0, p.first * kblocks, p.first * kblocks + maxima.numel());
  ops::copy_(dst, maxima.flatten());
}

Fp8UnitGather::OperandScales Fp8UnitGather::scales_from(const Tensor& maxima,
                                                        const models::Fp8Operand& op) const {
  OperandScales s;
  if (scaling_ == Fp8WeightScaling::PerTensor) {
    std::tie(s.scale, s.scale_inv) = ops::fp8_scale_from_maxima(maxima, DType::E4M3, MemoryCategory::Weights);
    return s;
  }
  s.block_maxima = ops::clone(maxima).reshape({op.rows / fp8block::kBlock, op.cols / fp8block::kBlock});
  s.scale_inv = ops::scale_inv_128x128_from_maxima(s.block_maxima, DType::E4M3, MemoryCategory::Weights);
  return s;
}

void Fp8UnitGather::refresh_scales() {
  if (version_ == store_.weights_version()) return;
  const NvtxRange range("fp8_gather scales");
  std::vector<std::pair<size_t, std::vector<models::Fp8Operand>>> units;
  int64_t count = 0;
  for (size_t k = 0; k < store_.units().size(); ++k) {
    if (!store_.units()[k].fp8_linears) continue;
    units.emplace_back(k, store_.fp8_operands(k));
    for (const models::Fp8Operand& op : units.back().second) count += maxima_count(op);
  }
  Tensor maxima = ops::zeros(store_.context(), {std::max<int64_t>(count, 1)}, DType::F32, MemoryCategory::Communication);
  int64_t at = 0;
  for (const auto& [k, operands] : units) {
    const models::ParamUnit& u = store_.units()[k];
    for (const models::Fp8Operand& op : operands) {
      const int64_t n = maxima_count(op);
      const auto [lo, hi] = overlap(op.offset, op.offset + op.numel(), u.shard.begin, u.shard.begin + u.shard.owned);
      if (hi > lo) part_maxima(u, op, lo, hi, maxima.slice(0, at, at + n));
      at += n;
    }
  }
  comm_.all_reduce(maxima, ReduceOp::Max).wait();
  at = 0;
  for (const auto& [k, operands] : units) {
    scales_[k].clear();
    for (const models::Fp8Operand& op : operands) {
      const int64_t n = maxima_count(op);
      scales_[k].push_back(scales_from(maxima.slice(0, at, at + n), op));
      at += n;
    }
  }
  version_ = store_.weights_version();
}

void Fp8UnitGather::quantize_part(const models::ParamUnit& u, const models::Fp8Operand& op,
                                  const OperandScales& scales, int64_t lo, int64_t hi, Tensor dst) {
  const Tensor part = u.master.slice(0, lo - u.shard.begin, hi - u.shard.begin);
  if (scaling_ == Fp8WeightScaling::PerTensor) {
    ops::copy_(dst, ops::quantize_per_tensor_with_scale(part, DType::E4M3, scales.scale).codes);
    return;
  }
  const PaddedBlockRows p = padded_block_rows(part, lo - op.offset, hi - op.offset, op.cols);
  const int64_t blocks = p.rows.size(0) / fp8block::kBlock;
  const ops::Fp8Blocked q =
      ops::quantize_128x128_with_maxima(p.rows, scales.block_maxima.slice(0, p.first, p.first + blocks),
                                        DType::E4M3, Fp8Saturation::Saturate, MemoryCategory::Workspace);
  ops::copy_(dst, q.codes.flatten().slice(0, p.begin, p.begin + hi - lo));
}

Tensor Fp8UnitGather::quantize_slice(size_t unit, const std::vector<models::Fp8Operand>& operands) {
  const models::ParamUnit& u = store_.units()[unit];
  Tensor codes = ops::zeros(store_.context(), {u.shard.shard_numel}, DType::E4M3, MemoryCategory::Communication);
  for (size_t i = 0; i < operands.size(); ++i) {
    const models::Fp8Operand& op = operands[i];
    const auto [lo, hi] = overlap(op.offset, op.offset + op.numel(), u.shard.begin, u.shard.begin + u.shard.owned);
    if (hi > lo)
      quantize_part(u, op, scales_[unit].at(i), lo, hi,
                    codes.slice(0, lo - u.shard.begin, hi - u.shard.begin));
  }
  return codes;
}

void Fp8UnitGather::put_in_cache(size_t unit, const models::Fp8Operand& op, const Tensor& codes,
                                 const OperandScales& scales) {
  if (scaling_ == Fp8WeightScaling::PerTensor) {
    ops::Fp8PerTensor q;
    q.codes = codes;
    // W^T's codes now, or from the cache in the backward (precision.cache_weight_transpose = false).
    if (store_.fp8_weights(unit).keeps_transpose()) q.codes_t = ops::contiguous(codes.transpose(0, 1));
    q.scale = scales.scale;
    q.scale_inv = scales.scale_inv;
    store_.fp8_weights(unit).put(*op.key, std::move(q));
    return;
  }
  nn::Fp8BlockWeight q;
  q.w.codes = codes;
  q.w.scale_inv = scales.scale_inv;
  q.w.block_rows = q.w.block_cols = static_cast<int>(fp8block::kBlock);
  q.w_t = ops::transpose_128x128(q.w);
  store_.fp8_block_weights(unit).put(*op.key, std::move(q));
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
  const std::vector<models::Fp8Operand> operands = store_.fp8_operands(g.unit);
  for (size_t i = 0; i < operands.size(); ++i) {
    const models::Fp8Operand& op = operands[i];
    put_in_cache(g.unit, op, g.codes.slice(0, op.offset, op.offset + op.numel()).reshape({op.rows, op.cols}),
                 scales_[g.unit].at(i));
  }
  g.codes_mine = g.loose_mine = Tensor();
}

int64_t Fp8UnitGather::gather(size_t unit) {
  Fp8Gathering g = start(unit);
  finish(g);
  return g.received;
}

}  // namespace coat::dist
