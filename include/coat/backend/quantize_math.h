// The scalar arithmetic of FP8 quantization, shared literally by the CPU reference (backend/cpu/quantize)
// and the CUDA kernels (backend/cuda/quantize) so that both produce the same bytes: NaN-propagating amax,
// scale from amax, one value quantized or dequantized. Also the argument checks both backends run.
//
// Why the bytes match: every step is one correctly rounded IEEE float operation (the product x * scale, the
// quotient fmt_max / amax, the reciprocal 1 / scale) or an exact one (|x|, max, the FP8 <-> float codec of
// float_formats.h). Device code spells the operations as __fmul_rn / __fdiv_rn so that nvcc can neither
// contract a product into an FMA nor pick an approximate division whatever the flags; host code is plain
// C++ built with -ffp-contract=off. NaN results are replaced by one canonical NaN (0x7FFFFFFF, the NaN the
// GPU itself produces) because CPUs and GPUs propagate NaN payloads and signs differently.
// Subnormals are kept on both sides (nvcc's default -ftz=false; no fast-math anywhere).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "coat/core/dtype.h"
#include "coat/core/float_formats.h"
#include "coat/core/float_ops.h"
#include "coat/core/host_device.h"
#include "coat/core/tensor.h"

namespace coat::fp8math {

inline constexpr uint32_t kCanonicalNanBits = 0x7FFFFFFFu;
inline constexpr float kFloatMax = 3.40282346638528859812e+38f;

COAT_HOST_DEVICE inline float canonical_nan() {
  return bits_to_float(kCanonicalNanBits);
}
COAT_HOST_DEVICE inline float canonicalize_nan(float v) {
  return v != v ? canonical_nan() : v;
}

// ---- amax ----
// An amax is carried as an unsigned "key": the bits of |v|, with every NaN mapped to 0x7FFFFFFF. For
// non-negative floats the unsigned order of the bits is the numeric order, +inf (0x7F800000) is above every
// finite value and the canonical NaN above +inf, so the unsigned max of keys is a max of |v| that propagates
// NaN and inf, is exact and independent of the reduction order (GPU: warp shuffles, then atomicMax).

COAT_HOST_DEVICE inline uint32_t amax_key(float v) {
  const uint32_t magnitude = float_to_bits(v) & 0x7FFFFFFFu;
  return magnitude > 0x7F800000u ? kCanonicalNanBits : magnitude;
}

COAT_HOST_DEVICE inline uint32_t max_key(uint32_t a, uint32_t b) {
  return a > b ? a : b;
}

COAT_HOST_DEVICE inline float amax_from_key(uint32_t key) {
  return bits_to_float(key);
}

// ---- scales ----

COAT_HOST_DEVICE constexpr float fp8_max(DType fmt) {
  return fmt == DType::E5M2 ? kE5M2Max : kE4M3Max;
}

/// scale = fmt_max / amax, so that the largest |x| maps onto the largest finite code.
///  - amax == 0 (an all-zero tensor or group): scale 1, every code 0.
///  - amax inf or NaN: scale NaN, so every code and every dequantized value becomes NaN: an overflow
///    upstream is never hidden (fmt_max / inf would give scale 0 and silently zero the tensor).
///  - amax so small that the quotient overflows (amax < fmt_max / FLT_MAX, subnormal inputs only):
///    scale FLT_MAX, so that zeros stay zeros instead of becoming 0 * inf = NaN.
COAT_HOST_DEVICE inline float scale_from_amax(float amax, float fmt_max) {
  if (!(amax <= kFloatMax)) return canonical_nan();  // NaN or +inf
  if (amax == 0.0f) return 1.0f;
  const float scale = div_rn(fmt_max, amax);
  return scale > kFloatMax ? kFloatMax : scale;
}

/// scale_inv = 1 / scale (the dequantization factor cuBLASLt takes); NaN stays the canonical NaN.
COAT_HOST_DEVICE inline float scale_inv_from_scale(float scale) {
  return canonicalize_nan(div_rn(1.0f, scale));
}

// ---- one value ----

template <DType Fmt>
COAT_HOST_DEVICE inline uint8_t fp8_encode(float v, Fp8Saturation sat) {
  static_assert(Fmt == DType::E4M3 || Fmt == DType::E5M2, "fp8_encode needs an FP8 dtype");
  if constexpr (Fmt == DType::E4M3) {
    return float_to_e4m3(v, sat);
  } else {
    return float_to_e5m2(v, sat);
  }
}

template <DType Fmt>
COAT_HOST_DEVICE inline float fp8_decode(uint8_t code) {
  static_assert(Fmt == DType::E4M3 || Fmt == DType::E5M2, "fp8_decode needs an FP8 dtype");
  if constexpr (Fmt == DType::E4M3) {
    return e4m3_to_float(code);
  } else {
    return e5m2_to_float(code);
  }
}

/// code = fp8(x * scale): one rounded multiply, then the codec's round-to-nearest-even with `sat`.
template <DType Fmt>
COAT_HOST_DEVICE inline uint8_t quantize_value(float x, float scale, Fp8Saturation sat) {
  return fp8_encode<Fmt>(canonicalize_nan(mul_rn(x, scale)), sat);
}

/// value = float(code) * scale_inv (the decode is exact; one rounded multiply).
template <DType Fmt>
COAT_HOST_DEVICE inline float dequantize_value(uint8_t code, float scale_inv) {
  return canonicalize_nan(mul_rn(fp8_decode<Fmt>(code), scale_inv));
}

// ---- the high-precision element types quantization reads and dequantization writes ----

/// Storage type of F32 / BF16 / F16 elements; BF16 and F16 are carried as their raw bits.
template <DType T>
struct FloatStorage {
  static_assert(T == DType::F32 || T == DType::BF16 || T == DType::F16, "quantization takes F32, BF16, F16");
  using type = uint16_t;
};
template <>
struct FloatStorage<DType::F32> {
  using type = float;
};
template <DType T>
using storage_t = typename FloatStorage<T>::type;

/// Exact widening to float.
template <DType T>
COAT_HOST_DEVICE inline float load_float(storage_t<T> v) {
  if constexpr (T == DType::F32) {
    return v;
  } else if constexpr (T == DType::BF16) {
    return bf16_to_float(v);
  } else {
    return f16_to_float(v);
  }
}

/// Rounding (nearest even) from float.
template <DType T>
COAT_HOST_DEVICE inline storage_t<T> store_float(float v) {
  if constexpr (T == DType::F32) {
    return v;
  } else if constexpr (T == DType::BF16) {
    return float_to_bf16(v);
  } else {
    return float_to_f16(v);
  }
}

}  // namespace coat::fp8math

// ---- host helpers of both backends: dtype dispatch and the argument checks run before any work ----
namespace coat::fp8math {

template <DType T>
using DTypeTag = std::integral_constant<DType, T>;

/// Calls f(DTypeTag<T>{}) for the high-precision dtype t (f32, bf16, f16).
template <typename F>
void dispatch_float_dtype(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::F32:
      f(DTypeTag<DType::F32>{});
      return;
    case DType::BF16:
      f(DTypeTag<DType::BF16>{});
      return;
    case DType::F16:
      f(DTypeTag<DType::F16>{});
      return;
    default:
      COAT_CHECK(false, NotImplemented, "[", op, "] no kernel for dtype ", dtype_name(t));
  }
}

/// Calls f(DTypeTag<T>{}) for the FP8 format t (e4m3, e5m2).
template <typename F>
void dispatch_fp8_format(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::E4M3:
      f(DTypeTag<DType::E4M3>{});
      return;
    case DType::E5M2:
      f(DTypeTag<DType::E5M2>{});
      return;
    default:
      COAT_CHECK(false, NotImplemented, "[", op, "] ", dtype_name(t), " is not an FP8 format");
  }
}

inline bool is_quantize_input_dtype(DType t) {
  return t == DType::F32 || t == DType::BF16 || t == DType::F16;
}

inline void check_contiguous_on(const Tensor& t, const char* op, const char* name, Device device) {
  COAT_ARG_CHECK(t.defined(), op, name, " is undefined");
  COAT_ARG_CHECK(t.device() == device, op, name, " is on ", t.device().str(), ", expected ", device.str());
  COAT_ARG_CHECK(t.is_contiguous(), op, name, " ", t.str(), " must be contiguous");
}

inline void check_high_precision_input(const Tensor& x, const char* op) {
  COAT_ARG_CHECK(x.defined(), op, "input is undefined");
  COAT_ARG_CHECK(x.is_contiguous(), op, "input ", x.str(), " must be contiguous");
  COAT_ARG_CHECK(is_quantize_input_dtype(x.dtype()), op, "input dtype ", dtype_name(x.dtype()),
                 " is not supported (expected f32, bf16 or f16)");
}

inline void check_scalar_f32(const Tensor& t, const char* op, const char* name, Device device) {
  check_contiguous_on(t, op, name, device);
  COAT_ARG_CHECK(t.dtype() == DType::F32 && t.numel() == 1, op, name,
                 " must be a one-element f32 tensor, got ", t.str());
}

inline void check_codes(const Tensor& codes, const Shape& shape, const char* op, const char* name,
                        Device device) {
  check_contiguous_on(codes, op, name, device);
  COAT_ARG_CHECK(is_fp8(codes.dtype()), op, name, " dtype ", dtype_name(codes.dtype()),
                 " is not an FP8 format (expected e4m3 or e5m2)");
  COAT_ARG_CHECK(codes.shape() == shape, op, name, " shape ", shape_str(codes.shape()), " does not match ",
                 shape_str(shape));
}

/// Checks group_size against x's last dimension and returns the shape of the per-group tensors [..., K/G].
inline Shape group_scale_shape(const Shape& x_shape, int64_t group_size, const char* op) {
  COAT_ARG_CHECK(!x_shape.empty(), op, "groups run along the last dimension; a 0-d tensor has none");
  COAT_ARG_CHECK(group_size > 0, op, "group_size must be positive, got ", group_size);
  const int64_t k = x_shape.back();
  COAT_ARG_CHECK(k % group_size == 0, op, "group_size ", group_size, " does not divide the last dimension ",
                 k, " of shape ", shape_str(x_shape),
                 ". HINT: pad the last dimension or pick a group size that divides it");
  Shape s = x_shape;
  s.back() = k / group_size;
  return s;
}

inline void check_group_scales(const Tensor& t, const Shape& shape, const char* op, const char* name,
                               Device device) {
  check_contiguous_on(t, op, name, device);
  COAT_ARG_CHECK(t.dtype() == DType::F32 && t.shape() == shape, op, name, " must be f32 of shape ",
                 shape_str(shape), ", got ", t.str());
}

inline void check_dequantize_output(const Tensor& out, const Shape& shape, const char* op, Device device) {
  check_contiguous_on(out, op, "output", device);
  COAT_ARG_CHECK(is_quantize_input_dtype(out.dtype()), op, "output dtype ", dtype_name(out.dtype()),
                 " is not supported (expected f32, bf16 or f16)");
  COAT_ARG_CHECK(out.shape() == shape, op, "output shape ", shape_str(out.shape()), " does not match ",
                 shape_str(shape));
}

inline void check_group_amax(const Tensor& x, int64_t group_size, const Tensor& out_amax, Device device) {
  constexpr const char* op = "group_amax";
  check_high_precision_input(x, op);
  check_contiguous_on(x, op, "input", device);
  check_group_scales(out_amax, group_scale_shape(x.shape(), group_size, op), op, "amax", device);
}

inline void check_tensor_amax(const Tensor& x, const Tensor& out_amax, Device device) {
  check_high_precision_input(x, "tensor_amax");
  check_contiguous_on(x, "tensor_amax", "input", device);
  check_scalar_f32(out_amax, "tensor_amax", "amax", device);
}

inline void check_compute_scale(const Tensor& amax, DType fmt, const Tensor& scale, const Tensor& scale_inv,
                                Device device) {
  constexpr const char* op = "compute_scale";
  COAT_ARG_CHECK(is_fp8(fmt), op, "format ", dtype_name(fmt),
                 " is not an FP8 format (expected e4m3 or e5m2)");
  check_scalar_f32(amax, op, "amax", device);
  check_scalar_f32(scale, op, "scale", device);
  check_scalar_f32(scale_inv, op, "scale_inv", device);
}

inline void check_compute_scale_from_maxima(const Tensor& maxima, DType fmt, const Tensor& scale,
                                            const Tensor& scale_inv, Device device) {
  constexpr const char* op = "compute_scale_from_maxima";
  COAT_ARG_CHECK(is_fp8(fmt), op, "format ", dtype_name(fmt),
                 " is not an FP8 format (expected e4m3 or e5m2)");
  check_contiguous_on(maxima, op, "maxima", device);
  COAT_ARG_CHECK(maxima.dtype() == DType::F32, op, "maxima must be f32, got ", maxima.str());
  check_scalar_f32(scale, op, "scale", device);
  check_scalar_f32(scale_inv, op, "scale_inv", device);
}

inline void check_add_quantize_per_group(const Tensor& a, const Tensor& b, int64_t group_size, const Tensor& sum,
                                         const Tensor& codes, const Tensor& scale_inv, Device device) {
  constexpr const char* op = "add_quantize_per_group";
  check_high_precision_input(a, op);
  check_contiguous_on(a, op, "a", device);
  check_contiguous_on(b, op, "b", device);
  check_contiguous_on(sum, op, "sum", device);
  COAT_ARG_CHECK(b.dtype() == a.dtype() && b.shape() == a.shape(), op, "b ", b.str(), " does not match a ",
                 a.str());
  COAT_ARG_CHECK(sum.dtype() == a.dtype() && sum.shape() == a.shape(), op, "sum ", sum.str(),
                 " does not match a ", a.str());
  check_codes(codes, a.shape(), op, "codes", device);
  check_group_scales(scale_inv, group_scale_shape(a.shape(), group_size, op), op, "scale_inv", device);
}

inline void check_quantize_per_tensor(const Tensor& x, const Tensor& scale, const Tensor& codes,
                                      Device device) {
  constexpr const char* op = "quantize_per_tensor";
  check_high_precision_input(x, op);
  check_contiguous_on(x, op, "input", device);
  check_scalar_f32(scale, op, "scale", device);
  check_codes(codes, x.shape(), op, "codes", device);
}

inline void check_dequantize_per_tensor(const Tensor& codes, const Tensor& scale_inv, const Tensor& out,
                                        Device device) {
  constexpr const char* op = "dequantize_per_tensor";
  COAT_ARG_CHECK(codes.defined(), op, "codes are undefined");
  check_codes(codes, codes.shape(), op, "codes", device);
  check_scalar_f32(scale_inv, op, "scale_inv", device);
  check_dequantize_output(out, codes.shape(), op, device);
}

inline void check_quantize_transpose(const Tensor& x, const Tensor& scale, const Tensor& codes,
                                     const Tensor& codes_t, Device device) {
  constexpr const char* op = "quantize_transpose_per_tensor";
  check_high_precision_input(x, op);
  check_contiguous_on(x, op, "input", device);
  COAT_ARG_CHECK(x.dim() == 2, op, "input must be 2-d [M, K], got ", x.str());
  check_scalar_f32(scale, op, "scale", device);
  check_codes(codes, x.shape(), op, "codes", device);
  check_codes(codes_t, Shape{x.size(1), x.size(0)}, op, "transposed codes", device);
  COAT_ARG_CHECK(codes_t.dtype() == codes.dtype(), op, "codes (", dtype_name(codes.dtype()),
                 ") and transposed codes (", dtype_name(codes_t.dtype()), ") must have one FP8 format");
}

inline void check_quantize_per_group(const Tensor& x, int64_t group_size, const Tensor& codes,
                                     const Tensor& scale_inv, Device device) {
  constexpr const char* op = "quantize_per_group";
  check_high_precision_input(x, op);
  check_contiguous_on(x, op, "input", device);
  const Shape scale_shape = group_scale_shape(x.shape(), group_size, op);
  check_codes(codes, x.shape(), op, "codes", device);
  check_group_scales(scale_inv, scale_shape, op, "scale_inv", device);
}

inline void check_dequantize_per_group(const Tensor& codes, const Tensor& scale_inv, int64_t group_size,
                                       const Tensor& out, Device device) {
  constexpr const char* op = "dequantize_per_group";
  COAT_ARG_CHECK(codes.defined(), op, "codes are undefined");
  check_codes(codes, codes.shape(), op, "codes", device);
  check_group_scales(scale_inv, group_scale_shape(codes.shape(), group_size, op), op, "scale_inv", device);
  check_dequantize_output(out, codes.shape(), op, device);
}

}  // namespace coat::fp8math
