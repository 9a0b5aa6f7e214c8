// Scalar codecs between float/double and the narrow formats BF16, F16, FP8 E4M3 and FP8 E5M2, bit-identical
// to the conversions of CUDA 13's cuda_fp8.h, cuda_bf16.h and cuda_fp16.h, on host and device alike.
#pragma once

#include <cstdint>
#include <cstring>

#include "coat/core/float_ops.h"
#include "coat/core/host_device.h"

#if defined(__CUDACC__)
#include <cuda_fp8.h>  // only for the sm_89+ hardware conversion in device code
#endif

namespace coat {

// Behaviour of FP8 encoding for magnitudes beyond the largest finite value (and for +/-inf), like
// __NV_SATFINITE / __NV_NOSAT: Saturate clamps to +/-max; NoSaturate gives NaN (E4M3) or +/-inf (E5M2).
enum class Fp8Saturation : uint8_t { Saturate, NoSaturate };

inline constexpr float kE4M3Max = 448.0f;
inline constexpr float kE5M2Max = 57344.0f;

namespace detail {

using ::coat::bits_to_float;
using ::coat::float_to_bits;

COAT_HOST_DEVICE inline uint64_t double_to_bits(double x) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint64_t>(__double_as_longlong(x));
#else
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return bits;
#endif
}

// Field layout of the wide source formats.
inline constexpr int kFloatMantissaBits = 23;
inline constexpr int kFloatBias = 127;
inline constexpr uint32_t kFloatInfBits = 0x7F800000u;
inline constexpr uint32_t kFloatNanBits = 0x7FFFFFFFu;  // the NaN every CUDA decode path produces
inline constexpr int kDoubleMantissaBits = 52;
inline constexpr int kDoubleBias = 1023;
inline constexpr uint64_t kDoubleInfBits = 0x7FF0000000000000ull;

// Field layout and special codes of the narrow formats (codes are magnitudes: sign bit excluded).
struct E4M3Format {
  static constexpr int kMantissaBits = 3;
  static constexpr int kBias = 7;
  static constexpr uint32_t kMaxFiniteCode = 0x7E;  // 448: "fn" keeps exponent 15 finite, bar 0x7F
  static constexpr uint32_t kNanCode = 0x7F;
  static constexpr uint32_t kNoSatOverflowCode = 0x7F;  // no infinity to overflow to, so NaN
};
struct E5M2Format {
  static constexpr int kMantissaBits = 2;
  static constexpr int kBias = 15;
  static constexpr uint32_t kMaxFiniteCode = 0x7B;  // 57344
  static constexpr uint32_t kNanCode = 0x7F;
  static constexpr uint32_t kNoSatOverflowCode = 0x7C;  // infinity
};
struct BF16Format {
  static constexpr int kMantissaBits = 7;
  static constexpr int kBias = 127;
  static constexpr uint32_t kInfCode = 0x7F80;
  static constexpr uint32_t kNanCode = 0x7FFF;
};
struct F16Format {
  static constexpr int kMantissaBits = 10;
  static constexpr int kBias = 15;
  static constexpr uint32_t kInfCode = 0x7C00;
  static constexpr uint32_t kNanCode = 0x7FFF;
};

// value / 2^shift rounded to nearest, ties to even. value < 2^54, so for shift >= 64 it is below one half.
COAT_HOST_DEVICE constexpr uint64_t shift_right_round_nearest_even(uint64_t value, int shift) {
  if (shift <= 0) return value;
  if (shift >= 64) return 0;
  const uint64_t kept = value >> shift;
  const uint64_t dropped = value & ((uint64_t{1} << shift) - 1);
  const uint64_t half = uint64_t{1} << (shift - 1);
  const bool round_up = dropped > half || (dropped == half && (kept & 1) != 0);
  return kept + (round_up ? 1 : 0);
}

// Rounds a finite-or-infinite magnitude of a wide binary format (sign bit already cleared) to the nearest
// value of a narrower one and returns that value's code as if the narrow format's exponent range were
// unbounded above: callers compare the result with their largest finite code to detect overflow
// (infinity lands far beyond it, as a huge exponent).
template <int kSrcMantissaBits, int kSrcBias, typename DstFormat, typename Bits>
COAT_HOST_DEVICE constexpr uint32_t round_magnitude_to_code(Bits magnitude) {
  constexpr int kDstMantissaBits = DstFormat::kMantissaBits;
  constexpr int kDstBias = DstFormat::kBias;
  // Handling source subnormals below relies on the target's normal range not starting below the source's.
  static_assert(kDstMantissaBits <= kSrcMantissaBits && kDstBias <= kSrcBias, "narrowing conversions only");

  const int biased_exponent = static_cast<int>(magnitude >> kSrcMantissaBits);
  const uint64_t fraction = magnitude & ((Bits{1} << kSrcMantissaBits) - 1);
  // A subnormal source has no implicit bit but the exponent of the lowest normal binade.
  const bool source_is_normal = biased_exponent != 0;
  const uint64_t significand = source_is_normal ? fraction | (uint64_t{1} << kSrcMantissaBits) : fraction;
  const int exponent = (source_is_normal ? biased_exponent : 1) - kSrcBias;

  // Below its normal range the target keeps the spacing of its lowest normal binade: its subnormals.
  const int target_exponent = exponent > 1 - kDstBias ? exponent : 1 - kDstBias;
  const int dropped_bits = (kSrcMantissaBits - kDstMantissaBits) + (target_exponent - exponent);
  const uint64_t target_significand = shift_right_round_nearest_even(significand, dropped_bits);

  // target_significand carries the implicit bit of a normal result (a subnormal result has none, and uses
  // biased exponent 1 - 1 = 0), so adding it to (biased exponent - 1) << M yields the code; a rounding carry
  // out of the mantissa moves the result into the next binade by itself.
  return (static_cast<uint32_t>(target_exponent + kDstBias - 1) << kDstMantissaBits) +
         static_cast<uint32_t>(target_significand);
}

// FP8 encode of a non-NaN input given as sign bit and magnitude bits of a float or double.
template <typename Format, int kSrcMantissaBits, int kSrcBias, typename Bits>
COAT_HOST_DEVICE constexpr uint8_t encode_fp8_non_nan(uint32_t sign, Bits magnitude, Fp8Saturation sat) {
  uint32_t code = round_magnitude_to_code<kSrcMantissaBits, kSrcBias, Format>(magnitude);
  if (code > Format::kMaxFiniteCode) {
    code = sat == Fp8Saturation::Saturate ? Format::kMaxFiniteCode : Format::kNoSatOverflowCode;
  }
  return static_cast<uint8_t>(sign | code);
}

// BF16/F16 encode of a non-NaN input: these formats have infinity and no saturation mode.
template <typename Format, int kSrcMantissaBits, int kSrcBias, typename Bits>
COAT_HOST_DEVICE constexpr uint16_t encode_ieee16_non_nan(uint32_t sign, Bits magnitude) {
  const uint32_t code = round_magnitude_to_code<kSrcMantissaBits, kSrcBias, Format>(magnitude);
  return static_cast<uint16_t>(sign | (code < Format::kInfCode ? code : Format::kInfCode));
}

// float encode paths shared by host and device. cuda_fp8.hpp replaces any float NaN by the positive
// 0x7FFFFFFF before converting, so every float NaN becomes the positive 0x7F in both formats.
template <typename Format>
COAT_HOST_DEVICE inline uint8_t float_to_fp8_software(float x, Fp8Saturation sat) {
  const uint32_t bits = float_to_bits(x);
  const uint32_t magnitude = bits & 0x7FFFFFFFu;
  if (magnitude > kFloatInfBits) return static_cast<uint8_t>(Format::kNanCode);
  return encode_fp8_non_nan<Format, kFloatMantissaBits, kFloatBias>((bits >> 24) & 0x80u, magnitude, sat);
}

// Decode of a non-NaN, non-infinite magnitude code; every such value is exact in float.
template <typename Format>
COAT_HOST_DEVICE inline float decode_finite_magnitude(uint32_t code) {
  constexpr int kMantissaBits = Format::kMantissaBits;
  const uint32_t biased_exponent = code >> kMantissaBits;
  const uint32_t fraction = code & ((1u << kMantissaBits) - 1);
  if (biased_exponent == 0) {
    // Subnormal or zero: fraction * 2^(1 - bias - M). Both factors and the product are exact normal floats
    // (or zero), so this is exact whatever the rounding or flush-to-zero mode.
    constexpr uint32_t kSubnormalUlpBits =
        static_cast<uint32_t>(kFloatBias + 1 - Format::kBias - kMantissaBits) << kFloatMantissaBits;
    return static_cast<float>(fraction) * bits_to_float(kSubnormalUlpBits);
  }
  const uint32_t float_exponent = biased_exponent - Format::kBias + kFloatBias;
  return bits_to_float((float_exponent << kFloatMantissaBits) |
                       (fraction << (kFloatMantissaBits - kMantissaBits)));
}

}  // namespace detail

// ---- FP8 encode ----------------------------------------------------------------------------------------

// Double NaNs keep their sign (cuda_fp8.hpp ORs the sign in last): +/-NaN -> 0x7F / 0xFF.
COAT_HOST_DEVICE inline uint8_t double_to_e4m3(double x, Fp8Saturation sat = Fp8Saturation::Saturate) {
  const uint64_t bits = detail::double_to_bits(x);
  const uint64_t magnitude = bits & 0x7FFFFFFFFFFFFFFFull;
  const uint32_t sign = static_cast<uint32_t>(bits >> 56) & 0x80u;
  if (magnitude > detail::kDoubleInfBits) return static_cast<uint8_t>(sign | detail::E4M3Format::kNanCode);
  return detail::encode_fp8_non_nan<detail::E4M3Format, detail::kDoubleMantissaBits, detail::kDoubleBias>(
      sign, magnitude, sat);
}

// Double NaNs keep their sign and become 0x7E | (bit 50 of the double), as in cuda_fp8.hpp, which ORs the
// top two fraction bits into 0x7E: a quiet NaN gives 0x7E or 0x7F depending on its payload.
COAT_HOST_DEVICE inline uint8_t double_to_e5m2(double x, Fp8Saturation sat = Fp8Saturation::Saturate) {
  const uint64_t bits = detail::double_to_bits(x);
  const uint64_t magnitude = bits & 0x7FFFFFFFFFFFFFFFull;
  const uint32_t sign = static_cast<uint32_t>(bits >> 56) & 0x80u;
  if (magnitude > detail::kDoubleInfBits) {
    return static_cast<uint8_t>(sign | 0x7Eu | (static_cast<uint32_t>(bits >> 50) & 1u));
  }
  return detail::encode_fp8_non_nan<detail::E5M2Format, detail::kDoubleMantissaBits, detail::kDoubleBias>(
      sign, magnitude, sat);
}

// On sm_89+ the saturating conversion is a single hardware cvt, as cuda_fp8.hpp itself does; NaNs are
// handled before it so that their code cannot depend on the hardware.
COAT_HOST_DEVICE inline uint8_t float_to_e4m3(float x, Fp8Saturation sat = Fp8Saturation::Saturate) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  if (sat == Fp8Saturation::Saturate && (detail::float_to_bits(x) & 0x7FFFFFFFu) <= detail::kFloatInfBits) {
    return static_cast<uint8_t>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
  }
#endif
  return detail::float_to_fp8_software<detail::E4M3Format>(x, sat);
}

COAT_HOST_DEVICE inline uint8_t float_to_e5m2(float x, Fp8Saturation sat = Fp8Saturation::Saturate) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  if (sat == Fp8Saturation::Saturate && (detail::float_to_bits(x) & 0x7FFFFFFFu) <= detail::kFloatInfBits) {
    return static_cast<uint8_t>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E5M2));
  }
#endif
  return detail::float_to_fp8_software<detail::E5M2Format>(x, sat);
}

// ---- F16 / BF16 / FP8 decode ---------------------------------------------------------------------------

// Like __half2float's host path: NaNs lose sign and payload and become 0x7FFFFFFF.
COAT_HOST_DEVICE inline float f16_to_float(uint16_t bits) {
  const uint32_t magnitude = bits & 0x7FFFu;
  if (magnitude > detail::F16Format::kInfCode) return detail::bits_to_float(detail::kFloatNanBits);
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t magnitude_bits =
      magnitude == detail::F16Format::kInfCode
          ? detail::kFloatInfBits
          : detail::float_to_bits(detail::decode_finite_magnitude<detail::F16Format>(magnitude));
  return detail::bits_to_float(sign | magnitude_bits);
}

// BF16 is the top half of a float, so widening is exact and keeps NaN sign and payload.
COAT_HOST_DEVICE inline float bf16_to_float(uint16_t bits) {
  return detail::bits_to_float(static_cast<uint32_t>(bits) << 16);
}

// E5M2 is the top byte of an F16, which is how cuda_fp8.hpp decodes it; so NaNs become 0x7FFFFFFF.
COAT_HOST_DEVICE inline float e5m2_to_float(uint8_t code) {
  return f16_to_float(static_cast<uint16_t>(code << 8));
}

// Both E4M3 NaNs (0x7F, 0xFF) decode to 0x7FFFFFFF, sign dropped, as __nv_cvt_fp8_to_halfraw + __half2float.
COAT_HOST_DEVICE inline float e4m3_to_float(uint8_t code) {
  const uint32_t magnitude = code & 0x7Fu;
  if (magnitude == detail::E4M3Format::kNanCode) return detail::bits_to_float(detail::kFloatNanBits);
  const uint32_t sign = static_cast<uint32_t>(code & 0x80u) << 24;
  return detail::bits_to_float(
      sign | detail::float_to_bits(detail::decode_finite_magnitude<detail::E4M3Format>(magnitude)));
}

// ---- BF16 / F16 encode ---------------------------------------------------------------------------------

// Round to nearest even; every NaN becomes the positive 0x7FFF (sign, payload dropped), as in cuda_bf16.hpp.
// On sm_80+ a non-NaN value takes the hardware conversion (cvt.rn.bf16.f32: the same rounding, subnormals kept;
// one instruction instead of the bit arithmetic below).
COAT_HOST_DEVICE inline uint16_t float_to_bf16(float x) {
  const uint32_t bits = detail::float_to_bits(x);
  const uint32_t magnitude = bits & 0x7FFFFFFFu;
  if (magnitude > detail::kFloatInfBits) return static_cast<uint16_t>(detail::BF16Format::kNanCode);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint16_t r;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x));
  return r;
#else
  return detail::encode_ieee16_non_nan<detail::BF16Format, detail::kFloatMantissaBits, detail::kFloatBias>(
      (bits >> 16) & 0x8000u, magnitude);
#endif
}

// Rounded once, straight from the double's bits: rounding to float first could round twice.
COAT_HOST_DEVICE inline uint16_t double_to_bf16(double x) {
  const uint64_t bits = detail::double_to_bits(x);
  const uint64_t magnitude = bits & 0x7FFFFFFFFFFFFFFFull;
  if (magnitude > detail::kDoubleInfBits) return static_cast<uint16_t>(detail::BF16Format::kNanCode);
  return detail::encode_ieee16_non_nan<detail::BF16Format, detail::kDoubleMantissaBits, detail::kDoubleBias>(
      static_cast<uint32_t>(bits >> 48) & 0x8000u, magnitude);
}

// IEEE half, round to nearest even; every NaN becomes the positive 0x7FFF, as in cuda_fp16.hpp.
COAT_HOST_DEVICE inline uint16_t float_to_f16(float x) {
  const uint32_t bits = detail::float_to_bits(x);
  const uint32_t magnitude = bits & 0x7FFFFFFFu;
  if (magnitude > detail::kFloatInfBits) return static_cast<uint16_t>(detail::F16Format::kNanCode);
  return detail::encode_ieee16_non_nan<detail::F16Format, detail::kFloatMantissaBits, detail::kFloatBias>(
      (bits >> 16) & 0x8000u, magnitude);
}

COAT_HOST_DEVICE inline uint16_t double_to_f16(double x) {
  const uint64_t bits = detail::double_to_bits(x);
  const uint64_t magnitude = bits & 0x7FFFFFFFFFFFFFFFull;
  if (magnitude > detail::kDoubleInfBits) return static_cast<uint16_t>(detail::F16Format::kNanCode);
  return detail::encode_ieee16_non_nan<detail::F16Format, detail::kDoubleMantissaBits, detail::kDoubleBias>(
      static_cast<uint32_t>(bits >> 48) & 0x8000u, magnitude);
}

}  // namespace coat
