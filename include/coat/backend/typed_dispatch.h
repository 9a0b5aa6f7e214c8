// dispatch_storage: calls f with a value of the storage type of a dtype (F32 as float, F64 as double,
// BF16 as its bits, uint16_t), for the backends' typed kernels; any other dtype is NotImplemented.
#pragma once

#include <cstdint>

#include "coat/core/dtype.h"
#include "coat/core/error.h"

namespace coat {

/// `backend` and `op` name the kernel in the error: "[op] backend: no kernel for dtype ...".
template <typename F>
void dispatch_storage(DType t, const char* backend, const char* op, F&& f) {
  switch (t) {
    case DType::F32:
      f(float{});
      return;
    case DType::F64:
      f(double{});
      return;
    case DType::BF16:
      f(uint16_t{});
      return;
    default:
      COAT_CHECK(false, NotImplemented, "[", op, "] ", backend, ": no kernel for dtype ", dtype_name(t));
  }
}

}  // namespace coat
