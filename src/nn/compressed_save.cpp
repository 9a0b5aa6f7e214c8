#include "coat/nn/compressed_save.h"

#include "coat/ops/quantize.h"

namespace coat::nn {

bool compressible(const Tensor& x) {
  return x.dim() >= 1 && x.size(-1) % kCompressGroup == 0;
}

std::vector<Tensor> compress_for_backward(const Tensor& x) {
  COAT_ARG_CHECK(compressible(x), "compress_for_backward", "last dimension of ", shape_str(x.shape()),
                 " is not a multiple of ", kCompressGroup);
  ops::Fp8PerGroup q = ops::quantize_per_group(x, kCompressGroup, DType::E4M3);
  return {std::move(q.codes), std::move(q.scale_inv)};
}

Tensor restore_from_backward(const std::vector<Tensor>& saved, size_t first, DType dtype) {
  COAT_ARG_CHECK(saved.size() >= first + 2, "restore_from_backward", "expected codes and scales at ", first);
  ops::Fp8PerGroup q;
  q.codes = saved[first];
  q.scale_inv = saved[first + 1];
  q.group_size = kCompressGroup;
  return ops::dequantize(q, dtype);
}

}  // namespace coat::nn
