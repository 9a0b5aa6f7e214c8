// Philox4x32-10 counter-based random numbers and their uniform / normal transforms, written once for the CPU
// backend and CUDA kernels so that both produce bit-identical random tensors for the same (seed, offset).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "coat/core/float_ops.h"
#include "coat/core/host_device.h"

// Bit-identity rules followed by every floating-point function below (break one and CPU and GPU drift):
//  * only correctly rounded operations: + - * / sqrt and fmaf, all IEEE round-to-nearest on both sides;
//    division and sqrt use the explicit __fdiv_rn / __fsqrt_rn intrinsics on device so that nvcc flags such
//    as -prec-div=false cannot swap in approximations;
//  * no product is ever an operand of a plain + or -: each multiply-add is an explicit fmaf, so neither
//    nvcc (which fuses by default) nor a host compiler with -ffp-contract=fast has anything left to fuse;
//  * no libm transcendental (logf, cosf, ...): glibc and libdevice round those differently.
// Not supported: -ffast-math / --use_fast_math (reassociation, flush-to-zero) and x87 excess precision.

namespace coat {

struct Philox4x32Result {
  uint32_t v[4];
};

namespace philox_detail {

// One Philox round: two 32x32->64 multiplies, the high halves mixed with the other words and the key.
COAT_HOST_DEVICE inline void philox_round(uint32_t (&counter)[4], uint32_t key0, uint32_t key1) {
  constexpr uint32_t kMultiplier0 = 0xD2511F53u;
  constexpr uint32_t kMultiplier1 = 0xCD9E8D57u;
  const uint64_t product0 = static_cast<uint64_t>(kMultiplier0) * counter[0];
  const uint64_t product1 = static_cast<uint64_t>(kMultiplier1) * counter[2];
  const uint32_t high0 = static_cast<uint32_t>(product0 >> 32);
  const uint32_t high1 = static_cast<uint32_t>(product1 >> 32);
  const uint32_t mixed0 = high1 ^ counter[1] ^ key0;
  const uint32_t mixed2 = high0 ^ counter[3] ^ key1;
  counter[1] = static_cast<uint32_t>(product1);
  counter[3] = static_cast<uint32_t>(product0);
  counter[0] = mixed0;
  counter[2] = mixed2;
}

// sin(pi/2 * r) and cos(pi/2 * r) for |r| <= 0.5 (|angle| <= pi/4): Taylor polynomials with pi/2 folded
// into the coefficients (truncation < 3e-9 relative, far below float rounding), evaluated in r^2.
COAT_HOST_DEVICE inline float cos_quarter_turn(float r) {
  const float r_squared = r * r;
  float poly = fmaf(-0x1.a6d1f2p-16f, r_squared, 0x1.e1f506p-11f);
  poly = fmaf(poly, r_squared, -0x1.55d3c8p-6f);
  poly = fmaf(poly, r_squared, 0x1.03c1f0p-2f);
  poly = fmaf(poly, r_squared, -0x1.3bd3ccp+0f);
  return fmaf(poly, r_squared, 1.0f);
}

COAT_HOST_DEVICE inline float sin_quarter_turn(float r) {
  // pi/2 split into a float head and tail so that the leading term r * pi/2 keeps ~48 bits of pi/2.
  constexpr float kHalfPiHead = 0x1.921fb6p+0f;
  constexpr float kHalfPiTail = -0x1.777a5cp-25f;
  const float r_squared = r * r;
  float poly = fmaf(0x1.507834p-13f, r_squared, -0x1.32d2ccp-8f);
  poly = fmaf(poly, r_squared, 0x1.466bc6p-4f);
  poly = fmaf(poly, r_squared, -0x1.4abbcep-1f);
  const float beyond_head = fmaf(poly, r_squared, kHalfPiTail);  // sin(pi/2 r)/r - kHalfPiHead
  return fmaf(r, kHalfPiHead, r * beyond_head);
}

}  // namespace philox_detail

// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11; the Random123
// reference): 10 rounds over a 128-bit counter, the 64-bit key bumped by the Weyl constants between rounds.
COAT_HOST_DEVICE inline Philox4x32Result philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                                       uint32_t k0, uint32_t k1) {
  constexpr uint32_t kWeyl0 = 0x9E3779B9u;  // golden ratio
  constexpr uint32_t kWeyl1 = 0xBB67AE85u;  // sqrt(3) - 1
  uint32_t counter[4] = {c0, c1, c2, c3};
  uint32_t key0 = k0;
  uint32_t key1 = k1;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key0 += kWeyl0;
      key1 += kWeyl1;
    }
    philox_detail::philox_round(counter, key0, key1);
  }
  return Philox4x32Result{{counter[0], counter[1], counter[2], counter[3]}};
}

// The four words of element `index` of a fill drawn at (seed, offset). The counter is offset + index alone,
// so the value never depends on the thread mapping, and a fill split into pieces (each piece's offset
// advanced by the elements before it) equals the fill done in one go.
COAT_HOST_DEVICE inline Philox4x32Result philox_for_element(uint64_t seed, uint64_t offset, uint64_t index) {
  const uint64_t counter = offset + index;
  return philox4x32_10(static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32), 0u, 0u,
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Uniform float in [0, 1): the top 24 bits scaled by 2^-24; every value is exact in float and 1 is never hit.
COAT_HOST_DEVICE constexpr float uniform_from_bits(uint32_t bits) {
  return static_cast<float>(bits >> 8) * 0x1p-24f;
}

// Natural logarithm from fmaf polynomials (fdlibm's logf reduction and minimax coefficients): x = 2^k * m
// with m in [sqrt(2)/2, sqrt(2)), f = m - 1 exact, log(1 + f) = 2 atanh(s) with s = f / (2 + f).
// Accuracy: max relative error 7.7e-8 (under 1 ulp) measured against double log, exhaustively over the
// 2^24 values in (0, 1] that normal_from_bits feeds it and on a grid over all positive floats; bound 2e-7.
// Returns -inf for +-0, NaN for negatives and NaN, +inf for +inf.
COAT_HOST_DEVICE inline float deterministic_log(float x) {
  constexpr float kLn2Head = 0x1.62e300p-1f;   // 17 significant bits: k * head is exact for |k| <= 128
  constexpr float kLn2Tail = 0x1.2fefa2p-17f;  // ln 2 - kLn2Head
  constexpr float kLg1 = 0x1.555554p-1f;
  constexpr float kLg2 = 0x1.999c26p-2f;
  constexpr float kLg3 = 0x1.23d3dcp-2f;
  constexpr float kLg4 = 0x1.f13c4cp-3f;

  uint32_t bits = float_to_bits(x);
  if ((bits & 0x7fffffffu) == 0u) return bits_to_float(0xff800000u);  // -inf
  if (bits & 0x80000000u) return bits_to_float(0x7fc00000u);          // log of a negative: NaN
  if (bits >= 0x7f800000u) return x;                                  // +inf stays, NaN propagates
  int exponent = -127;
  if (bits < 0x00800000u) {  // subnormal: scale into the normal range (exact) and undo it in the exponent
    bits = float_to_bits(x * 0x1p25f);
    exponent -= 25;
  }
  exponent += static_cast<int>(bits >> 23);
  uint32_t mantissa = bits & 0x007fffffu;
  // Mantissa bits above those of sqrt(2) (0x3fb504f3): halve m and carry one into the exponent, so that m
  // straddles 1 and f = m - 1 stays small on both sides.
  if (mantissa > 0x3504f3u) {
    mantissa |= 0x3f000000u;
    exponent += 1;
  } else {
    mantissa |= 0x3f800000u;
  }
  const float f = bits_to_float(mantissa) - 1.0f;  // exact (Sterbenz)
  const float k = static_cast<float>(exponent);
  const float s = div_rn(f, 2.0f + f);
  const float s_squared = s * s;
  float poly = fmaf(kLg4, s_squared, kLg3);
  poly = fmaf(poly, s_squared, kLg2);
  poly = fmaf(poly, s_squared, kLg1);
  const float half_f = 0.5f * f;  // exact
  // log(1 + f) = f - f^2/2 + s (f^2/2 + R) with R = s^2 * poly; the tail of ln 2 rides along with the
  // small correction and its head is added last, as in fdlibm.
  const float half_f_squared_plus_r = fmaf(poly, s_squared, half_f * f);
  const float correction = fmaf(s, half_f_squared_plus_r, k * kLn2Tail);
  const float half_f_squared_minus_correction = fmaf(half_f, f, -correction);
  return fmaf(k, kLn2Head, -(half_f_squared_minus_correction - f));
}

// cos(2 pi u) for u in [0, 1). The reduction is exact: 4u = quadrant + r with |r| <= 1/2 computed without
// rounding, then cos(pi/2 (quadrant + r)) is +-cos or +-sin of pi/2 * r. Because r is exact, values near
// the zeros (u near 1/4, 3/4) keep full relative accuracy. Accuracy: max relative error 8.6e-8 measured
// against double cos, exhaustively over the 2^24 values uniform_from_bits can produce; bound 2e-7.
COAT_HOST_DEVICE inline float deterministic_cos_2pi(float u) {
  // Exact (a power of two), so it does not matter whether a compiler fuses it into the subtraction below.
  const float quarter_turns = 4.0f * u;
  int quadrant = static_cast<int>(quarter_turns);
  float r = quarter_turns - static_cast<float>(quadrant);  // exact, in [0, 1)
  if (r > 0.5f) {
    r -= 1.0f;  // exact (Sterbenz), now in (-1/2, 0)
    ++quadrant;
  }
  // -sin(x) is taken as sin(-x) (the polynomial is odd, so this is exact) rather than by negating an fmaf
  // result: GCC with -ffp-contract=fast rewrites -fmaf(a, b, c) as fmaf(-a, b, -c), which flips the sign
  // of an exact zero (u = 1/4). cos here is >= 0.7, never zero, so negating it is safe.
  switch (quadrant & 3) {
    case 0: return philox_detail::cos_quarter_turn(r);
    case 1: return philox_detail::sin_quarter_turn(-r);
    case 2: return -philox_detail::cos_quarter_turn(r);
    default: return philox_detail::sin_quarter_turn(r);
  }
}

// Standard normal by Box-Muller from two words: u1 in (0, 1] (never 0, so the log is finite; |z| <= 5.77),
// u2 in [0, 1). Only the cosine branch is used, one normal per element.
COAT_HOST_DEVICE inline float normal_from_bits(uint32_t bits_u1, uint32_t bits_u2) {
  const float u1 = static_cast<float>((bits_u1 >> 8) + 1u) * 0x1p-24f;
  const float u2 = uniform_from_bits(bits_u2);
  const float radius = sqrt_rn(-2.0f * deterministic_log(u1));
  return radius * deterministic_cos_2pi(u2);
}

// Element `index` of a uniform [lo, hi) fill at (seed, offset), from word 0.
COAT_HOST_DEVICE inline float philox_uniform(uint64_t seed, uint64_t offset, uint64_t index, float lo,
                                             float hi) {
  const float u = uniform_from_bits(philox_for_element(seed, offset, index).v[0]);
  const float value = fmaf(hi - lo, u, lo);
  // lo + (hi - lo) * u can round up to hi when u is just below 1; pull it back to keep the interval open.
  if (value >= hi && lo < hi) return nextafterf(hi, lo);
  return value;
}

// Element `index` of a normal(mean, stddev) fill at (seed, offset), from words 0 and 1.
COAT_HOST_DEVICE inline float philox_normal(uint64_t seed, uint64_t offset, uint64_t index, float mean,
                                            float stddev) {
  const Philox4x32Result words = philox_for_element(seed, offset, index);
  return fmaf(stddev, normal_from_bits(words.v[0], words.v[1]), mean);
}

}  // namespace coat
