// CPU kernels' element types by storage: F32 as float, F64 as double, BF16 as its bits (uint16_t).
// Arithmetic runs in acc_t<S>: float, or double for F64. widen/narrow convert (BF16 round-to-nearest-even);
// dispatch_storage calls f with a value of the storage type of a dtype (coat/backend/typed_dispatch.h).
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

#include "coat/backend/typed_dispatch.h"
#include "coat/core/dtype.h"
#include "coat/core/float_formats.h"

namespace coat::cpu {

template <typename S>
using acc_t = std::conditional_t<std::is_same_v<S, double>, double, float>;

inline float widen(float v) { return v; }
inline double widen(double v) { return v; }
inline float widen(uint16_t v) { return bf16_to_float(v); }

template <typename S>
S narrow(acc_t<S> v) {
  if constexpr (std::is_same_v<S, uint16_t>) {
    return float_to_bf16(v);
  } else {
    return v;
  }
}

template <typename F>
void dispatch_storage(DType t, const char* op, F&& f) {
  coat::dispatch_storage(t, "cpu", op, std::forward<F>(f));
}

}  // namespace coat::cpu
