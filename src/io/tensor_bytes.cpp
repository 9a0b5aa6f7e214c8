// Bit-exact host staging: reinterpret as the unsigned/signed integer type of the same width, so ops::copy_
// takes its integer path (no float conversion that could touch NaN payloads or FP8 codes).
#include "coat/io/tensor_bytes.h"

#include <cstring>
#include <memory>

#include "coat/ops/copy.h"

namespace coat::io {

DType bits_dtype(DType dtype) {
  switch (dtype_size(dtype)) {
    case 1:
      return DType::U8;
    case 2:
      return DType::U16;
    case 4:
      return DType::U32;
    default:
      return DType::I64;
  }
}

Tensor host_contiguous(const Tensor& t, const ContextPtr& host) {
  COAT_ARG_CHECK(t.defined(), "host_contiguous", "undefined tensor");
  if (t.device().is_cpu() && t.is_contiguous()) return t;
  const Tensor bits = t.view_as(bits_dtype(t.dtype()));
  const Tensor copy = t.device().is_cpu() ? ops::clone(bits) : ops::to(bits, host);
  return copy.view_as(t.dtype());
}

void copy_bits(Tensor& dst, const Tensor& src) {
  COAT_ARG_CHECK(src.defined() && dst.defined(), "copy_bits", "undefined tensor");
  COAT_ARG_CHECK(src.dtype() == dst.dtype() && src.shape() == dst.shape(), "copy_bits", "destination ",
                 dtype_name(dst.dtype()), " ", shape_str(dst.shape()), " differs from source ",
                 dtype_name(src.dtype()), " ", shape_str(src.shape()));
  Tensor dst_bits = dst.view_as(bits_dtype(dst.dtype()));
  ops::copy_(dst_bits, src.view_as(bits_dtype(src.dtype())));
}

void copy_bytes_into(const uint8_t* bytes, Tensor& dst) {
  COAT_ARG_CHECK(dst.defined(), "copy_bytes_into", "undefined destination tensor");
  if (dst.numel() == 0) return;
  if (dst.device().is_cpu() && dst.is_contiguous()) {
    std::memcpy(dst.data_ptr(), bytes, dst.nbytes());
    return;
  }
  const DType bits = bits_dtype(dst.dtype());
  Tensor staged = Tensor::empty(std::make_shared<CpuContext>(), dst.shape(), bits, MemoryCategory::Workspace);
  std::memcpy(staged.data_ptr(), bytes, staged.nbytes());
  Tensor dst_bits = dst.view_as(bits);
  ops::copy_(dst_bits, staged);
}

}  // namespace coat::io
