// FP8 all-gather of a sharded unit whose linears all run FP8 with per-tensor scales (the fp8 and coat recipes;
// models::ParamUnit::fp8_linears): instead of the BF16 unit (2 bytes per element), each rank quantises its slice
// of the FP32 masters with each matrix's global scale and the ranks gather the E4M3 codes (1 byte per element);
// each rank then makes the transposed codes locally and fills the unit's FP8 cache (nn::Fp8Weights::put). The
// unit's vectors (norm weights) are gathered in BF16 apart. The scales come from one all-reduce (max) of every
// matrix's slice maxima per optimizer step, so the codes are bit-identical to those one process quantises from
// its masters: an elementwise quantisation with the same scale.
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

class Fp8UnitGather {
 public:
  /// `store` sharded over `comm`'s ranks, with mixed precision (BF16 compute, FP32 masters); both outlive this.
  Fp8UnitGather(models::UnitStore& store, Communicator& comm);

  /// Gathers unit `unit` (its fp8_linears must be set): fills its FP8 cache and binds its vectors
  /// (UnitStore::bind_loose). Returns the bytes this rank received.
  int64_t gather(size_t unit);
  /// gather in two halves: start issues the all-gathers (asynchronous where the communicator is), finish waits
  /// for them and fills the cache. Between them the weights must not change.
  Fp8Gathering start(size_t unit);
  void finish(Fp8Gathering& g);

 private:
  /// Every FP8 matrix's scale for the store's current weights: the maxima of this rank's slices, one
  /// all-reduce (max) over the ranks, the scales from them. Once per weights version.
  void refresh_scales();
  /// This rank's E4M3 codes of unit `unit`'s slice (zero outside its matrices).
  Tensor quantize_slice(size_t unit, const std::vector<models::Fp8Operand>& operands);
  /// The unit's vectors (loose parameters): this rank's parts issued to the all-gather (start_loose), and the
  /// whole vectors taken from each part's owner (finish_loose).
  void start_loose(Fp8Gathering& g);
  Tensor finish_loose(const Fp8Gathering& g);
  /// Each loose parameter's [offset, end) in unit `unit`.
  std::vector<std::pair<int64_t, int64_t>> loose_ranges(size_t unit) const;

  models::UnitStore& store_;
  Communicator& comm_;
  int64_t version_ = -1;  ///< the weights version the scales are for
  /// Per unit (store index), per FP8 operand (fp8_operands order): scale and scale_inv, F32 [1].
  std::vector<std::vector<std::pair<Tensor, Tensor>>> scales_;
};

}  // namespace coat::dist
