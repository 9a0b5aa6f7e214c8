#include "coat/nn/fp8_weights.h"

#include "coat/core/nvtx.h"
#include "coat/ops/copy.h"

namespace coat::nn {

const ops::Fp8PerTensor& Fp8Weights::get(const Parameter& w) {
  Entry& e = entries_[&w];
  if (e.version != version_) {
    const NvtxRange range("fp8_weight");
    const Tensor& source = w.quantization_source();
    COAT_CHECK(source.defined(), Error, "[Fp8Weights] weight '", w.name,
               "' has no weights here to quantise (a sharded unit used before it was gathered)");
    COAT_ARG_CHECK(source.dim() == 2, "Fp8Weights", "weight '", w.name, "' must be 2-D, got ",
                   shape_str(source.shape()));
    e.q = ops::Fp8PerTensor{};  // release the old copy before making the new one
    if (e.maxima_version == version_) {
      e.q = ops::quantize_per_tensor_from_maxima(source, e.maxima, DType::E4M3, keep_transpose_,
                                                 Fp8Saturation::Saturate, MemoryCategory::Weights);
      ++from_maxima_;
    } else {
      e.q = ops::quantize_per_tensor(source, DType::E4M3, keep_transpose_, Fp8Saturation::Saturate,
                                     MemoryCategory::Weights);
    }
    e.maxima = Tensor();
    e.version = version_;
    ++quantizations_;
  }
  return e.q;
}

ops::Fp8PerTensor Fp8Weights::transposed(const Parameter& w) {
  const ops::Fp8PerTensor& q = get(w);
  ops::Fp8PerTensor t = q.transposed();
  if (!t.codes.defined()) {
    // Counted with the cache it stands in for (MemoryCategory::Weights), one linear's at a time; not as
    // ops::contiguous would, in the source's category (gathered codes are Communication).
    const NvtxRange range("fp8_weight_transpose");
    t.codes = Tensor::empty(q.codes.context(), {q.codes.size(1), q.codes.size(0)}, q.codes.dtype(),
                            MemoryCategory::Weights);
    ops::copy_(t.codes, q.codes.transpose(0, 1));
  }
  return t;
}

void Fp8Weights::set_keep_transpose(bool keep) {
  keep_transpose_ = keep;
  entries_.clear();
}

void Fp8Weights::put(const Parameter& w, ops::Fp8PerTensor q) {
  if (!keep_transpose_) q.codes_t = Tensor();
  const bool transpose_ok = !keep_transpose_ || (q.codes_t.dim() == 2 && q.codes_t.size(0) == q.codes.size(1) &&
                                                 q.codes_t.size(1) == q.codes.size(0));
  COAT_ARG_CHECK(q.codes.dim() == 2 && transpose_ok && q.scale.defined() && q.scale_inv.defined(), "Fp8Weights",
                 "put: the copy of weight '", w.name, "' needs codes [N, K], ",
                 keep_transpose_ ? "codes_t [K, N] " : "", "and scales");
  Entry& e = entries_[&w];
  e.q = std::move(q);
  e.version = version_;
}

void Fp8Weights::put_maxima(const Parameter& w, Tensor maxima) {
  COAT_ARG_CHECK(maxima.defined() && maxima.dtype() == DType::F32 && maxima.numel() >= 1, "Fp8Weights",
                 "put_maxima: weight '", w.name, "' needs non-empty f32 maxima, got ",
                 maxima.defined() ? maxima.str() : std::string("undefined"));
  Entry& e = entries_[&w];
  e.maxima = std::move(maxima);
  e.maxima_version = version_;
}

size_t Fp8Weights::bytes() const {
  size_t total = 0;
  for (const auto& [p, e] : entries_) {
    for (const Tensor* t : {&e.q.codes, &e.q.codes_t, &e.q.scale, &e.q.scale_inv})
      if (t->defined()) total += t->nbytes();
  }
  return total;
}

}  // namespace coat::nn
