// CPU reference: element-wise arithmetic and sums (double accumulation, one final rounding).
#include "coat/backend/cpu/elementwise.h"

#include "coat/backend/element_access.h"

namespace coat::cpu {

void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  const int64_t n = a.numel();
  const void* pa = a.data_ptr();
  const void* pb = b.data_ptr();
  void* po = out.data_ptr();
  const DType t = a.dtype();
  for (int64_t i = 0; i < n; ++i) {
    store_from_double(po, i, t, apply_binary(op, load_as_double(pa, i, t), load_as_double(pb, i, t)));
  }
}

void scale(const Tensor& a, double factor, Tensor& out) {
  const int64_t n = a.numel();
  const void* pa = a.data_ptr();
  void* po = out.data_ptr();
  const DType t = a.dtype();
  for (int64_t i = 0; i < n; ++i) store_from_double(po, i, t, load_as_double(pa, i, t) * factor);
}

void reciprocal(const Tensor& a, Tensor& out) {
  const int64_t n = a.numel();
  const void* pa = a.data_ptr();
  void* po = out.data_ptr();
  for (int64_t i = 0; i < n; ++i) store_from_double(po, i, out.dtype(), 1.0 / load_as_double(pa, i, a.dtype()));
}

void sum(const Tensor& x, Tensor& out) {
  const int64_t n = x.numel();
  const void* p = x.data_ptr();
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) total += load_as_double(p, i, x.dtype());
  store_from_double(out.data_ptr(), 0, out.dtype(), total);
}

void sum_last_dim(const Tensor& x, Tensor& out) {
  const int64_t cols = x.dim() == 0 ? 1 : x.size(-1);
  const int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  const void* p = x.data_ptr();
  for (int64_t r = 0; r < rows; ++r) {
    double total = 0.0;
    for (int64_t c = 0; c < cols; ++c) total += load_as_double(p, r * cols + c, x.dtype());
    store_from_double(out.data_ptr(), r, out.dtype(), total);
  }
}

}  // namespace coat::cpu
