// Loading and storing one element of any dtype through double, shared by the CPU and CUDA kernels.
// Every float dtype converts to double exactly, and double arithmetic followed by one rounding to a
// float/bf16/f16 result equals the correctly rounded single operation for + - * / (53 >= 2*24+2), so
// kernels written this way give identical bits on both backends.
#pragma once

#include <cstdint>

#include "coat/core/dtype.h"
#include "coat/core/float_formats.h"
#include "coat/core/host_device.h"

namespace coat {

/// Float-to-integer conversion used by casts: truncation toward zero, NaN -> 0, saturation at the
/// type's range (defined behaviour on both backends, unlike a plain C++ cast).
template <typename Int>
COAT_HOST_DEVICE inline Int saturating_float_to_int(double v, double lo, double hi) {
  if (v != v) return 0;
  if (v <= lo) return static_cast<Int>(lo);
  if (v >= hi) return static_cast<Int>(hi);
  return static_cast<Int>(v);
}

COAT_HOST_DEVICE inline double load_as_double(const void* base, int64_t i, DType t) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(base)[i];
    case DType::F64: return static_cast<const double*>(base)[i];
    case DType::BF16: return bf16_to_float(static_cast<const uint16_t*>(base)[i]);
    case DType::F16: return f16_to_float(static_cast<const uint16_t*>(base)[i]);
    case DType::E4M3: return e4m3_to_float(static_cast<const uint8_t*>(base)[i]);
    case DType::E5M2: return e5m2_to_float(static_cast<const uint8_t*>(base)[i]);
    case DType::I32: return static_cast<const int32_t*>(base)[i];
    case DType::I64: return static_cast<double>(static_cast<const int64_t*>(base)[i]);
    case DType::U8: return static_cast<const uint8_t*>(base)[i];
    case DType::U16: return static_cast<const uint16_t*>(base)[i];
    case DType::U32: return static_cast<const uint32_t*>(base)[i];
  }
  return 0.0;
}

COAT_HOST_DEVICE inline void store_from_double(void* base, int64_t i, DType t, double v,
                                               Fp8Saturation sat = Fp8Saturation::Saturate) {
  switch (t) {
    case DType::F32: static_cast<float*>(base)[i] = static_cast<float>(v); return;
    case DType::F64: static_cast<double*>(base)[i] = v; return;
    case DType::BF16: static_cast<uint16_t*>(base)[i] = double_to_bf16(v); return;
    case DType::F16: static_cast<uint16_t*>(base)[i] = double_to_f16(v); return;
    case DType::E4M3: static_cast<uint8_t*>(base)[i] = double_to_e4m3(v, sat); return;
    case DType::E5M2: static_cast<uint8_t*>(base)[i] = double_to_e5m2(v, sat); return;
    case DType::I32:
      static_cast<int32_t*>(base)[i] = saturating_float_to_int<int32_t>(v, -2147483648.0, 2147483647.0);
      return;
    case DType::I64:
      // 2^63 is not representable as int64; the largest double below it is.
      static_cast<int64_t*>(base)[i] =
          saturating_float_to_int<int64_t>(v, -9223372036854775808.0, 9223372036854774784.0);
      return;
    case DType::U8: static_cast<uint8_t*>(base)[i] = saturating_float_to_int<uint8_t>(v, 0.0, 255.0); return;
    case DType::U16:
      static_cast<uint16_t*>(base)[i] = saturating_float_to_int<uint16_t>(v, 0.0, 65535.0);
      return;
    case DType::U32:
      static_cast<uint32_t*>(base)[i] = saturating_float_to_int<uint32_t>(v, 0.0, 4294967295.0);
      return;
  }
}

/// Integer dtypes convert among themselves through int64 (modular, as C++20 defines narrowing).
COAT_HOST_DEVICE inline int64_t load_as_int64(const void* base, int64_t i, DType t) {
  switch (t) {
    case DType::I32: return static_cast<const int32_t*>(base)[i];
    case DType::I64: return static_cast<const int64_t*>(base)[i];
    case DType::U8: return static_cast<const uint8_t*>(base)[i];
    case DType::U16: return static_cast<const uint16_t*>(base)[i];
    case DType::U32: return static_cast<const uint32_t*>(base)[i];
    default: return 0;
  }
}

COAT_HOST_DEVICE inline void store_from_int64(void* base, int64_t i, DType t, int64_t v) {
  switch (t) {
    case DType::I32: static_cast<int32_t*>(base)[i] = static_cast<int32_t>(v); return;
    case DType::I64: static_cast<int64_t*>(base)[i] = v; return;
    case DType::U8: static_cast<uint8_t*>(base)[i] = static_cast<uint8_t>(v); return;
    case DType::U16: static_cast<uint16_t*>(base)[i] = static_cast<uint16_t>(v); return;
    case DType::U32: static_cast<uint32_t*>(base)[i] = static_cast<uint32_t>(v); return;
    default: return;
  }
}

/// Converts element i of src (dtype s) into element j of dst (dtype d).
COAT_HOST_DEVICE inline void convert_element(const void* src, int64_t i, DType s, void* dst, int64_t j,
                                             DType d, Fp8Saturation sat) {
  if (is_integer(s) && is_integer(d)) {
    store_from_int64(dst, j, d, load_as_int64(src, i, s));
  } else {
    store_from_double(dst, j, d, load_as_double(src, i, s), sat);
  }
}

}  // namespace coat
