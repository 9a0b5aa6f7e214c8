// Element types of tensors: floating (F64, F32, BF16, F16, FP8 E4M3, FP8 E5M2) and integer types.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace coat {

enum class DType : uint8_t { F32, F64, BF16, F16, E4M3, E5M2, I32, I64, U8, U16, U32 };

inline constexpr DType kAllDTypes[] = {DType::F32, DType::F64, DType::BF16, DType::F16,
                                       DType::E4M3, DType::E5M2, DType::I32, DType::I64,
                                       DType::U8,  DType::U16,  DType::U32};

/// Size of one element in bytes.
constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::F64:
    case DType::I64:
      return 8;
    case DType::F32:
    case DType::I32:
    case DType::U32:
      return 4;
    case DType::BF16:
    case DType::F16:
    case DType::U16:
      return 2;
    case DType::E4M3:
    case DType::E5M2:
    case DType::U8:
      return 1;
  }
  return 0;
}

constexpr bool is_floating(DType t) {
  return t == DType::F32 || t == DType::F64 || t == DType::BF16 || t == DType::F16 || t == DType::E4M3 ||
         t == DType::E5M2;
}
constexpr bool is_fp8(DType t) { return t == DType::E4M3 || t == DType::E5M2; }
constexpr bool is_integer(DType t) { return !is_floating(t); }

/// Lower-case name as used in configs and messages: "f32", "bf16", "e4m3", ...
std::string_view dtype_name(DType t);
/// Parses a name from dtype_name (also accepts "float32", "bfloat16", "fp8_e4m3", ...); throws with the
/// list of valid names otherwise.
DType dtype_from_name(std::string_view name);

}  // namespace coat
