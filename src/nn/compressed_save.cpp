#include "coat/nn/compressed_save.h"

#include "coat/ops/quantize.h"

namespace coat::nn {

bool compresses_input(const autograd::Tape& tape, const Tensor& x, bool compress) {
  return compress && tape.grad_enabled() && x.dim() >= 1 && x.size(-1) % kCompressGroup == 0;
}

namespace {

/// The producer's compressed copy of x, checked against x and viewed in x's shape (codes) and x's group
/// shape (scales): the function's backward restores it as x.
ops::Fp8PerGroup as_copy_of(const ops::Fp8PerGroup& copy, const Tensor& x) {
  constexpr const char* op = "save_input";
  COAT_ARG_CHECK(copy.group_size == kCompressGroup && copy.codes.dtype() == DType::E4M3, op,
                 "the precomputed copy must be E4M3 with groups of ", kCompressGroup, ", got ",
                 dtype_name(copy.codes.dtype()), " with groups of ", copy.group_size);
  COAT_ARG_CHECK(copy.codes.numel() == x.numel() && copy.codes.dim() >= 1 && copy.codes.size(-1) == x.size(-1) &&
                     copy.codes.is_contiguous(),
                 op, "the precomputed copy ", copy.codes.str(), " is not a contiguous copy of the input ", x.str());
  COAT_ARG_CHECK(copy.scale_inv.defined() && copy.scale_inv.dtype() == DType::F32 &&
                     copy.scale_inv.numel() == x.numel() / kCompressGroup && copy.scale_inv.is_contiguous(),
                 op, "the precomputed copy's scales ", copy.scale_inv.defined() ? copy.scale_inv.str() : "undefined",
                 " do not match the input ", x.str());
  COAT_ARG_CHECK(copy.codes.device() == x.device() && copy.scale_inv.device() == x.device(), op,
                 "the precomputed copy is on ", copy.codes.device().str(), ", the input on ", x.device().str());
  Shape scale_shape = x.shape();
  scale_shape.back() /= kCompressGroup;
  ops::Fp8PerGroup q;
  q.codes = copy.codes.reshape(x.shape());
  q.scale_inv = copy.scale_inv.reshape(scale_shape);
  q.group_size = kCompressGroup;
  return q;
}

}  // namespace

SavedInput save_input(const autograd::Tape& tape, const Tensor& x, bool compress, std::vector<Tensor>& saved,
                      const ops::Fp8PerGroup* precomputed) {
  COAT_ARG_CHECK(saved.empty(), "save_input", "the input goes first in the saved list, which already holds ",
                 saved.size(), " tensors");
  SavedInput in;
  in.dtype = x.dtype();
  in.compressed = compresses_input(tape, x, compress);
  if (!in.compressed) {
    saved.push_back(x);
    return in;
  }
  ops::Fp8PerGroup q = precomputed != nullptr && precomputed->codes.defined()
                           ? as_copy_of(*precomputed, x)
                           : ops::quantize_per_group(x, kCompressGroup, DType::E4M3);
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
