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

class Fp8UnitGather {
 public:
  /// `store` sharded over `comm`'s ranks, with mixed precision (BF16 compute, FP32 masters); both outlive this.
  Fp8UnitGather(models::UnitStore& store, Communicator& comm);

  /// Gathers unit `unit` (its fp8_linears must be set): fills its FP8 cache and binds its vectors
  /// (UnitStore::bind_loose). Returns the bytes this rank received.
  int64_t gather(size_t unit);

 private:
  /// Every FP8 matrix's scale for the store's current weights: the maxima of this rank's slices, one
  /// all-reduce (max) over the ranks, the scales from them. Once per weights version.
  void refresh_scales();
  /// This rank's E4M3 codes of unit `unit`'s slice (zero outside its matrices).
  Tensor quantize_slice(size_t unit, const std::vector<models::Fp8Operand>& operands);
  /// The unit's vectors (loose parameters) whole, in BF16, gathered from their owners. `received` grows by
  /// the bytes received.
  Tensor gather_loose(size_t unit, int64_t& received);

  models::UnitStore& store_;
  Communicator& comm_;
  int64_t version_ = -1;  ///< the weights version the scales are for
  /// Per unit (store index), per FP8 operand (fp8_operands order): scale and scale_inv, F32 [1].
  std::vector<std::vector<std::pair<Tensor, Tensor>>> scales_;
};

}  // namespace coat::dist
