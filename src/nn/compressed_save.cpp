#include "coat/nn/compressed_save.h"

#include "coat/ops/quantize.h"

namespace coat::nn {

SavedInput save_input(const autograd::Tape& tape, const Tensor& x, bool compress, std::vector<Tensor>& saved) {
  COAT_ARG_CHECK(saved.empty(), "save_input", "the input goes first in the saved list, which already holds ",
                 saved.size(), " tensors");
  SavedInput in;
  in.dtype = x.dtype();
  in.compressed = compress && tape.grad_enabled() && x.dim() >= 1 && x.size(-1) % kCompressGroup == 0;
  if (!in.compressed) {
    saved.push_back(x);
    return in;
  }
  ops::Fp8PerGroup q = ops::quantize_per_group(x, kCompressGroup, DType::E4M3);
  saved.push_back(std::move(q.codes));
  saved.push_back(std::move(q.scale_inv));
  return in;
}

Tensor SavedInput::restore(const std::vector<Tensor>& saved) const {
  if (!compressed) return saved.at(0);
  COAT_ARG_CHECK(saved.size() >= 2, "SavedInput::restore", "expected codes and scales, got ", saved.size(),
                 " saved tensors");
  ops::Fp8PerGroup q;
  q.codes = saved[0];
  q.scale_inv = saved[1];
  q.group_size = kCompressGroup;
  return ops::dequantize(q, dtype);
}

}  // namespace coat::nn
