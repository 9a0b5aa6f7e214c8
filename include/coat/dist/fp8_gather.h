// FP8 all-gather of a sharded unit whose linears all run FP8 (models::ParamUnit::fp8_linears): instead of the
// BF16 unit (2 bytes per element), each rank quantises its slice of the FP32 masters with the scales of the
// whole matrices and the ranks gather the E4M3 codes (1 byte per element); each rank then makes the
// transposes locally and fills the unit's FP8 cache. The unit's vectors (norm weights) are gathered in BF16
// apart. The scales come from one all-reduce (max) per weights version of the maxima of every rank's slices:
//  - Fp8WeightScaling::PerTensor (the fp8 and coat recipes; nn::Fp8Weights): one maximum per matrix.
//  - Fp8WeightScaling::Block128x128 (fp8_block; nn::Fp8BlockWeights): one per 128x128 block, numel / 16384
//    floats per unit. Shard boundaries need not fall on block rows: each rank pads its part of a matrix with
//    zeros to whole block rows, takes the amax of every block of that (zero where it holds none of the block)
//    and quantises it with the reduced amaxes; the transpose's scales are the transposed grid of the same
//    ones.
// Every rank computes every scale itself from the reduced maxima (no scale is gathered), so the codes and
// scales are bit-identical to those one process quantises from its masters: an elementwise quantisation with
// the same scale.
#pragma once

#include <cstdint>
#include <vector>

#include "coat/dist/communicator.h"
#include "coat/models/unit_store.h"

namespace coat::dist {

/// A gather in flight (Fp8UnitGather::start): this rank's contributions, the buffers being filled, their works.
struct Fp8Gathering {
  size_t unit = 0;
  Tensor codes_mine, codes;  ///< E4M3 [shard_numel] and [padded_numel]
  Tensor loose_mine, loose;  ///< BF16 [vectors] and [vectors * world]
  CommWork codes_work, loose_work;
  int64_t received = 0;      ///< bytes this rank receives
};

/// How the FP8 linears of the gathered units scale their weights: the recipe's choice, which also picks the
/// cache.
enum class Fp8WeightScaling { PerTensor, Block128x128 };

class Fp8UnitGather {
 public:
  /// `store` sharded over `comm`'s ranks, with mixed precision (BF16 compute, FP32 masters); both outlive this.
  Fp8UnitGather(models::UnitStore& store, Communicator& comm,
                Fp8WeightScaling scaling = Fp8WeightScaling::PerTensor);

  /// Gathers unit `unit` (its fp8_linears must be set): fills its FP8 cache and binds its vectors
  /// (UnitStore::bind_loose). Returns the bytes this rank received.
  int64_t gather(size_t unit);
  /// gather in two halves: start issues the all-gathers (asynchronous where the communicator is), finish waits
  /// for them and fills the cache. Between them the weights must not change.
  Fp8Gathering start(size_t unit);
  void finish(Fp8Gathering& g);

 private:
  /// One FP8 matrix's scales for the current weights. PerTensor: scale and scale_inv (F32 [1]); Block128x128:
  /// the blocks' amaxes (F32 [rows/128, cols/128]) and their scale_inv (the cuBLASLt layout).
  struct OperandScales {
    Tensor scale, scale_inv, block_maxima;
  };
  /// Every FP8 matrix's scales for the store's current weights: the maxima of this rank's slices, one
  /// all-reduce (max) over the ranks, the scales from them. Once per weights version.
  void refresh_scales();
  /// How many maxima operand `op` has (1, or one per 128x128 block).
  int64_t maxima_count(const models::Fp8Operand& op) const;
  /// The maxima of part [lo, hi) (unit offsets) of operand `op` of unit `u`, this rank's, into `slot`.
  void part_maxima(const models::ParamUnit& u, const models::Fp8Operand& op, int64_t lo, int64_t hi,
                   Tensor slot);
  OperandScales scales_from(const Tensor& maxima, const models::Fp8Operand& op) const;
  /// This rank's E4M3 codes of unit `unit`'s slice (zero outside its matrices).
  Tensor quantize_slice(size_t unit, const std::vector<models::Fp8Operand>& operands);
  /// The codes of part [lo, hi) of operand `op` of unit `u` into `dst`.
  void quantize_part(const models::ParamUnit& u, const models::Fp8Operand& op, const OperandScales& scales,
                     int64_t lo, int64_t hi, Tensor dst);
  /// Operand `op`'s gathered codes [rows, cols] and scales into unit `unit`'s FP8 cache, with their
  /// transpose.
  void put_in_cache(size_t unit, const models::Fp8Operand& op, const Tensor& codes,
                    const OperandScales& scales);
  /// The unit's vectors (loose parameters): this rank's parts issued to the all-gather (start_loose), and the
  /// whole vectors taken from each part's owner (finish_loose).
  void start_loose(Fp8Gathering& g);
  Tensor finish_loose(const Fp8Gathering& g);
  /// Each loose parameter's [offset, end) in unit `unit`.
  std::vector<std::pair<int64_t, int64_t>> loose_ranges(size_t unit) const;

  models::UnitStore& store_;
  Communicator& comm_;
  Fp8WeightScaling scaling_;
  int64_t version_ = -1;  ///< the weights version the scales are for
  /// Per unit (store index), per FP8 operand (fp8_operands order).
  std::vector<std::vector<OperandScales>> scales_;
};

}  // namespace coat::dist
