#include "coat/nn/fp8_block_weights.h"

#include "coat/backend/block_scale_layout.h"
#include "coat/core/nvtx.h"

namespace coat::nn {

const Fp8BlockWeight& Fp8BlockWeights::get(const Parameter& w) {
  Entry& e = entries_[&w];
  if (e.version != version_) {
    const NvtxRange range("fp8_block_weight");
    const Tensor& v = w.quantization_source();
    COAT_CHECK(v.defined(), Error, "[Fp8BlockWeights] weight '", w.name,
               "' has no weights here to quantise (a sharded unit used before it was gathered)");
    COAT_ARG_CHECK(v.dim() == 2 && v.size(0) % fp8block::kBlock == 0 && v.size(1) % fp8block::kBlock == 0,
                   "Fp8BlockWeights", "weight '", w.name, "' of shape ", shape_str(v.shape()),
                   ": 128x128 block scaling needs a 2-D weight with both dimensions multiples of ",
                   fp8block::kBlock, " (keep this layer in BF16: precision.bf16_layers)");
    e.q = Fp8BlockWeight{};  // release the old copy before making the new one
    e.q.w = ops::quantize_128x128(v, DType::E4M3, Fp8Saturation::Saturate, MemoryCategory::Weights);
    e.q.w_t = ops::transpose_128x128(e.q.w);
    e.version = version_;
    ++quantizations_;
  }
  return e.q;
}

void Fp8BlockWeights::put(const Parameter& w, Fp8BlockWeight q) {
  const auto blocked = [](const ops::Fp8Blocked& b) {
    return b.codes.dim() == 2 && b.scale_inv.defined() && b.block_rows == fp8block::kBlock &&
           b.block_cols == fp8block::kBlock;
  };
  COAT_ARG_CHECK(blocked(q.w) && blocked(q.w_t) && q.w_t.codes.size(0) == q.w.codes.size(1) &&
                     q.w_t.codes.size(1) == q.w.codes.size(0),
                 "Fp8BlockWeights", "put: the copies of weight '", w.name,
                 "' need 128x128-blocked codes [N, K] and [K, N] with their scales");
  Entry& e = entries_[&w];
  e.q = std::move(q);
  e.version = version_;
}

size_t Fp8BlockWeights::bytes() const {
  size_t total = 0;
  for (const auto& [p, e] : entries_) {
    for (const Tensor* t : {&e.q.w.codes, &e.q.w.scale_inv, &e.q.w_t.codes, &e.q.w_t.scale_inv})
      if (t->defined()) total += t->nbytes();
  }
  return total;
}

}  // namespace coat::nn
