#include "coat/backend/token_strided.h"

namespace coat {

int64_t token_stride_of(const Tensor& t) {
  if (!t.defined() || t.dim() != 4) return -1;
  const int64_t b = t.size(0), tt = t.size(1), h = t.size(2), dh = t.size(3);
  const int64_t row = h * dh;
  int64_t ts = row;
  if (tt > 1) {
    ts = t.stride(1);
  } else if (b > 1) {
    ts = t.stride(0);
  }
  if (ts < row) return -1;
  if (dh > 1 && t.stride(3) != 1) return -1;
  if (h > 1 && t.stride(2) != dh) return -1;
  if (b > 1 && t.stride(0) != tt * ts) return -1;
  return ts;
}

}  // namespace coat
