// Names of element types and their parsing.
#include "coat/core/dtype.h"

#include <algorithm>
#include <cctype>
#include <string>

#include "coat/core/error.h"

namespace coat {

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F64: return "f64";
    case DType::BF16: return "bf16";
    case DType::F16: return "f16";
    case DType::E4M3: return "e4m3";
    case DType::E5M2: return "e5m2";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
    case DType::U8: return "u8";
    case DType::U16: return "u16";
    case DType::U32: return "u32";
  }
  return "?";
}

DType dtype_from_name(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  struct Alias {
    std::string_view name;
    DType dtype;
  };
  static constexpr Alias kAliases[] = {
      {"float32", DType::F32},   {"fp32", DType::F32},       {"float64", DType::F64},
      {"fp64", DType::F64},      {"bfloat16", DType::BF16},  {"float16", DType::F16},
      {"fp16", DType::F16},      {"fp8_e4m3", DType::E4M3},  {"float8_e4m3fn", DType::E4M3},
      {"fp8_e5m2", DType::E5M2}, {"float8_e5m2", DType::E5M2}, {"int32", DType::I32},
      {"int64", DType::I64},     {"uint8", DType::U8},        {"uint16", DType::U16},
      {"uint32", DType::U32},
  };
  for (DType t : kAllDTypes) {
    if (lower == dtype_name(t)) return t;
  }
  for (const Alias& a : kAliases) {
    if (lower == a.name) return a.dtype;
  }
  std::string valid;
  for (DType t : kAllDTypes) valid += (valid.empty() ? "" : ", ") + std::string(dtype_name(t));
  throw InvalidArgument(detail::concat("unknown dtype '", name, "'; expected one of: ", valid));
}

}  // namespace coat
