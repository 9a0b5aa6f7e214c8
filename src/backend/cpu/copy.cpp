// CPU reference: strided copy with conversion, constant/arange fills and Philox random fills.
#include "coat/backend/cpu/copy.h"

#include <cstring>

#include "coat/backend/element_access.h"
#include "coat/backend/strided_layout.h"
#include "coat/core/philox.h"

namespace coat::cpu {

void copy(const Tensor& src, Tensor& dst, Fp8Saturation sat) {
  const int64_t n = src.numel();
  if (n == 0) return;
  if (src.dtype() == dst.dtype() && src.is_contiguous() && dst.is_contiguous()) {
    std::memmove(dst.data_ptr(), src.data_ptr(), src.nbytes());
    return;
  }
  const StridedLayout in = strided_layout_of(src);
  const StridedLayout out = strided_layout_of(dst);
  const void* s = src.data_ptr();
  void* d = dst.data_ptr();
  for (int64_t i = 0; i < n; ++i) {
    convert_element(s, in.offset_of(i), src.dtype(), d, out.offset_of(i), dst.dtype(), sat);
  }
}

void fill(Tensor& dst, double value) {
  const int64_t n = dst.numel();
  const StridedLayout out = strided_layout_of(dst);
  void* d = dst.data_ptr();
  for (int64_t i = 0; i < n; ++i) store_from_double(d, out.offset_of(i), dst.dtype(), value);
}

void arange(Tensor& dst, double start, double step) {
  const int64_t n = dst.numel();
  void* d = dst.data_ptr();
  for (int64_t i = 0; i < n; ++i) store_from_double(d, i, dst.dtype(), start + static_cast<double>(i) * step);
}

void fill_uniform(Tensor& dst, uint64_t seed, uint64_t offset, float low, float high) {
  const int64_t n = dst.numel();
  void* d = dst.data_ptr();
  for (int64_t i = 0; i < n; ++i) {
    store_from_double(d, i, dst.dtype(), philox_uniform(seed, offset, static_cast<uint64_t>(i), low, high));
  }
}

void fill_normal(Tensor& dst, uint64_t seed, uint64_t offset, float mean, float std) {
  const int64_t n = dst.numel();
  void* d = dst.data_ptr();
  for (int64_t i = 0; i < n; ++i) {
    store_from_double(d, i, dst.dtype(), philox_normal(seed, offset, static_cast<uint64_t>(i), mean, std));
  }
}

}  // namespace coat::cpu
