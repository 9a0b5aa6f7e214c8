// The scalar arithmetic of FP8 optimizer moments (COAT's dynamic range expansion,
// ../shared/docs/COAT_NOTES.md section 3), written once for the CPU twin (backend/cpu/quantized_adamw) and
// the CUDA kernel (backend/cuda/quantized_adamw) so that both store the same bytes: deterministic log2 / exp2
// / pow, the per-group statistics, the per-group metadata (scale s, expansion exponent k, centre g) and the
// encode / decode of one element.
//
// Determinism. Every operation below is one IEEE float operation rounded to nearest even (add_rn, sub_rn,
// mul_rn, div_rn, sqrt_rn of coat/core/float_ops.h), an explicit fused multiply-add (fma_rn: IEEE 754
// fusedMultiplyAdd, rounded once; std::fma on the host, __fmaf_rn on the device; never an implicit
// contraction), an exact operation (bit manipulation, comparisons, floor, |x|, the FP8 codec of
// float_formats.h) or an integer operation. std::log2 / log2f / powf are not used: their results differ
// between glibc and CUDA's libdevice. Host code is built with -ffp-contract=off and no fast-math.
//
// Accuracy (measured over every positive float, tests/ops/test_quantized_moment.cpp checks a dense sample
// against std::log2 / std::exp2 in double):
//   log2_det: at most 1.61 ulp of the float result over all positive normal and subnormal floats (worst
//             1.608 ulp at x = 0x1.69c96cp+0, near sqrt(2), where the result approaches 1/2).
//   exp2_det: at most 0.87 ulp over every float t whose result is a normal float; subnormal results within
//             0.92 of a subnormal step; t >= 128 gives +inf, t < -151 gives 0.
//
// The formats (one group = `group_size` contiguous elements; the last group may be shorter):
//   plain FP8:  s = max|x| / fmt_max (fmt_max = 448 for E4M3, 57344 for E5M2), q = fp8_sat(x / s),
//               decode q * s. All-zero group: s = 0, codes 0. A max below fmt_max * 2^-149 (s would
//               underflow to 0) gives the smallest subnormal s, so that x / s stays finite.
//   expansion:  over the NONZERO |x| of the group (a masked min: zeros, also in the first lane, never count):
//               mx = max, mn = min; g = sqrt(mx mn) (log2 g = (log2 mx + log2 mn) / 2);
//               k = floor(16 * log2(R) / log2(mx / mn)) / 16 clamped to [kExpoMin, kExpoMax] = [1/16, 8]
//               (k = 1 when mx == mn); y = sign(x) |x / g|^k; s = max|y| / fmt_max; q = fp8_sat(y / s);
//               zeros are stored as code 0. Decode: x = sign(q) (|q| s)^(1/k) g, code 0 -> 0.
//               Stored per group: log2 s, k, log2 g (the log2 domain, so that nothing per step takes the
//               log2 of stored values). All-zero group: log2 s = log2 g = -inf, k = 1.
//               log2 max|y| = k (log2 mx - log2 g) (y is monotone in |x|), so log2 s needs no exp2.
//               Per element nothing is raised to a power: k takes 128 values and a code 128 magnitudes, so
//               the powers are tabulated per FP8 format (the expansion's tables below) and each group
//               contributes one factor f = (q_max s)^(1/k) g: a code decodes to f T_k[|q|], and |x| encodes
//               to the number of code boundaries f U_k[j] at or below it: rounding to nearest in the y
//               domain, the midpoints mapped back to x (ties go up).
//   Non-finite values: a group whose max|x| is inf or NaN gets s = NaN (log2 s = log2 g = NaN with
//   expansion): its elements (with expansion: its nonzero elements) are stored as the NaN code 0x7F and
//   decode to NaN, so an overflow is never hidden. (Callers skip steps with non-finite gradients, as for
//   ops::adamw_step.)
//
// The target range R and the bounds of k:
//   R_fmt = fmt_max^2 / 2: 448^2 / 2 for E4M3 (the reference's choice) and 57344^2 / 2 for E5M2. Both formats
//   satisfy fmt_max * (smallest subnormal) = 0.875, so with R = fmt_max^2 / 2 the group's smallest nonzero
//   magnitude lands at fmt_max / R = 2 / fmt_max, the same 1.19 binades above the smallest subnormal in
//   either format (2^-7.81 for E4M3, 2^-14.81 for E5M2): the E5M2 choice is the exact analogue of the E4M3
//   one. k >= 1/16: k is quantised to 1/16, and floor() reaches 0 once mx / mn > R^16 (possible for E4M3
//   only: log2(mx / mn) <= 277 in float); k = 1/16 then still maps the top of the group onto the FP8 range
//   and lets the smallest values fall to subnormal codes or 0. k <= 8: the quantisation error of |y| (2^-4
//   relative for E4M3, 2^-3 for E5M2, round to nearest) becomes err / k in x, so k = 8 already brings it to
//   <= 0.8% (E4M3) / 1.6% (E5M2); larger k would mostly amplify rounding in k * log2|x| and, for nearly
//   constant groups (mx / mn -> 1, k -> inf), the error of the computed log2(mx / mn). It is also the bound
//   of the reference's Python test.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "coat/backend/quantize_math.h"
#include "coat/core/dtype.h"
#include "coat/core/float_formats.h"
#include "coat/core/float_ops.h"
#include "coat/core/host_device.h"

namespace coat::moment_codec {

// ---- deterministic elementary functions ----

COAT_HOST_DEVICE inline float positive_infinity() {
  return bits_to_float(0x7F800000u);
}

/// log2(x) for a positive finite float x (normal or subnormal), without the special inputs: <= 1.61 ulp.
/// x = 2^e m with m in [sqrt(1/2), sqrt(2)), f = m - 1 (exact); log2(1 + f) = f P(f) with P the degree-9
/// Chebyshev interpolant of log2(1 + f) / f on [sqrt(1/2) - 1, sqrt(2) - 1] (relative error 1.9e-8 with the
/// coefficients rounded to float); e + f P(f) rounded once by an fma. No division and no branch, so that the
/// elements of a thread interleave on the GPU. For 0, inf, NaN or x < 0 the result is some value computed by
/// the same integer and IEEE operations (callers select those cases away).
/// c[0] f^(N-1) + ... + c[N-1] by Horner's rule, one fma per coefficient after the first (highest degree
/// first).
template <int N>
COAT_HOST_DEVICE inline float horner(float f, const float (&c)[N]) {
  float p = c[0];
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int i = 1; i < N; ++i) p = fma_rn(p, f, c[i]);
  return p;
}

/// The argument reduction of log2_core: x = 2^e (1 + f) with 1 + f in [sqrt(1/2), sqrt(2)), f
/// exact, e returned as a float (exact).
struct Log2Split {
  float f;
  float e;
};
COAT_HOST_DEVICE inline Log2Split log2_split(float x) {
  const uint32_t bits = float_to_bits(x);
  const bool subnormal = bits < 0x00800000u;
  const uint32_t b = subnormal ? float_to_bits(mul_rn(x, 8388608.0f)) : bits;  // * 2^23, exact
  // Split around sqrt(1/2) (bits 0x3F3504F3): e = floor(log2(x / sqrt(1/2))), m = x / 2^e.
  const int32_t e = static_cast<int32_t>(b - 0x3F3504F3u) >> 23;
  const float m = bits_to_float(b - (static_cast<uint32_t>(e) << 23));
  return Log2Split{sub_rn(m, 1.0f), static_cast<float>(subnormal ? e - 23 : e)};  // m - 1 exact (Sterbenz)
}

COAT_HOST_DEVICE inline float log2_core(float x) {
  const Log2Split s = log2_split(x);
  constexpr float kP[] = {-1.074978933e-01f, 1.847603321e-01f, -1.913883835e-01f, 2.048576474e-01f,
                          -2.396081239e-01f, 2.885525525e-01f, -3.606965542e-01f, 4.808985293e-01f,
                          -7.213473320e-01f, 1.442695022e+00f};
  return fma_rn(s.f, horner(s.f, kP), s.e);
}

/// log2(x) for any float x: log2_core, with -inf for +-0, NaN (canonical) for x < 0 and NaN, +inf for +inf.
COAT_HOST_DEVICE inline float log2_det(float x) {
  const uint32_t bits = float_to_bits(x);
  float r = log2_core(x);
  r = bits >= 0x7F800000u ? (bits == 0x7F800000u ? positive_infinity() : fp8math::canonical_nan()) : r;
  return (bits & 0x7FFFFFFFu) == 0u ? -positive_infinity() : r;
}

/// 2^(n) for an integer n in [-126, 127], exactly.
COAT_HOST_DEVICE inline float pow2i(int32_t n) {
  return bits_to_float(static_cast<uint32_t>(n + 127) << 23);
}

/// 2^f for |f| <= 1/2: the Taylor series of 2^f to degree 7 (truncation < 2^-27); result in [0.7071, 1.4143].
COAT_HOST_DEVICE inline float exp2_reduced(float f) {
  // (ln 2)^j / j!, j = 7..0
  constexpr float kP[] = {
      1.5252733804059841e-05f, 1.5403530393381609e-04f, 1.3333558146428443e-03f, 9.6181291076284772e-03f,
      5.5504108664821580e-02f, 2.4022650695910071e-01f, 6.9314718055994531e-01f, 1.0f};
  return horner(f, kP);
}

/// t = n + f with n the nearest integer (|t| < 2^22) and |f| <= 1/2, both exact.
COAT_HOST_DEVICE inline float split_nearest(float t, int32_t& n) {
  constexpr float kShifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds |t| < 2^22 to an integer
  const float shifted = add_rn(t, kShifter);
  n = static_cast<int32_t>(float_to_bits(shifted) - float_to_bits(kShifter));
  return sub_rn(t, sub_rn(shifted, kShifter));
}

/// 2^t for a float t that is not NaN (NaN gives 0 here): +inf for t >= 128, 0 for t < -151; <= 0.87 ulp for
/// normal results. t = n + f, n = nearest integer, |f| <= 1/2; 2^f from exp2_reduced, then scaled by
/// 2^floor(n/2) (exact: the product stays normal) and by 2^(n - floor(n/2)), so that a subnormal result is
/// rounded once. t is clamped to [-151, 128] first (2^-151 rounds to 0, 2^128 is inf). No branch.
COAT_HOST_DEVICE inline float exp2_clamped(float t) {
  float tc = t > -151.0f ? t : -151.0f;  // NaN -> -151
  tc = tc < 128.0f ? tc : 128.0f;
  int32_t n = 0;
  const float p = exp2_reduced(split_nearest(tc, n));
  const int32_t half = n >> 1;  // floor(n / 2); both halves within [-76, 64]
  return mul_rn(mul_rn(p, pow2i(half)), pow2i(n - half));
}

/// 2^t for a float t: exp2_clamped, NaN (canonical) for NaN.
COAT_HOST_DEVICE inline float exp2_det(float t) {
  return t != t ? fp8math::canonical_nan() : exp2_clamped(t);
}

/// a^b for a >= 0 as exp2(b * log2(a)) (0^b = 0 for b > 0).
COAT_HOST_DEVICE inline float pow_det(float a, float b) {
  return exp2_det(mul_rn(b, log2_det(a)));
}

// ---- encodings ----

/// How one moment is stored: F32, BF16 (round to nearest even), plain FP8 with a scale per group, or FP8
/// with dynamic range expansion (scale, exponent k and centre g per group).
enum class Codec : uint8_t { F32, BF16, Fp8E4M3, Fp8E5M2, ExpandE4M3, ExpandE5M2 };
inline constexpr Codec kAllCodecs[] = {Codec::F32,     Codec::BF16,       Codec::Fp8E4M3,
                                       Codec::Fp8E5M2, Codec::ExpandE4M3, Codec::ExpandE5M2};

COAT_HOST_DEVICE constexpr bool is_grouped(Codec c) {
  return c != Codec::F32 && c != Codec::BF16;
}
COAT_HOST_DEVICE constexpr bool is_expand(Codec c) {
  return c == Codec::ExpandE4M3 || c == Codec::ExpandE5M2;
}
COAT_HOST_DEVICE constexpr DType fp8_format(Codec c) {
  return c == Codec::Fp8E5M2 || c == Codec::ExpandE5M2 ? DType::E5M2 : DType::E4M3;
}
/// dtype of the codes tensor.
constexpr DType code_dtype(Codec c) {
  return c == Codec::F32 ? DType::F32 : c == Codec::BF16 ? DType::BF16 : fp8_format(c);
}
constexpr const char* codec_name(Codec c) {
  switch (c) {
    case Codec::F32:
      return "f32";
    case Codec::BF16:
      return "bf16";
    case Codec::Fp8E4M3:
      return "fp8-e4m3";
    case Codec::Fp8E5M2:
      return "fp8-e5m2";
    case Codec::ExpandE4M3:
      return "fp8-expand-e4m3";
    case Codec::ExpandE5M2:
      return "fp8-expand-e5m2";
  }
  return "?";
}

/// Calls f(std::integral_constant<Codec, C>{}) for the runtime codec c (host code: backend dispatch).
template <typename F>
void dispatch_codec(Codec c, F&& f) {
  switch (c) {
    case Codec::F32:
      return f(std::integral_constant<Codec, Codec::F32>{});
    case Codec::BF16:
      return f(std::integral_constant<Codec, Codec::BF16>{});
    case Codec::Fp8E4M3:
      return f(std::integral_constant<Codec, Codec::Fp8E4M3>{});
    case Codec::Fp8E5M2:
      return f(std::integral_constant<Codec, Codec::Fp8E5M2>{});
    case Codec::ExpandE4M3:
      return f(std::integral_constant<Codec, Codec::ExpandE4M3>{});
    case Codec::ExpandE5M2:
      return f(std::integral_constant<Codec, Codec::ExpandE5M2>{});
  }
}

/// Whether the AdamW step of these moments is adamw_math::adamw_update_folded (any moment stored as FP8
/// codes) rather than torch's order (F32 / BF16 moments only).
COAT_HOST_DEVICE constexpr bool uses_folded_update(Codec m, Codec v) {
  return is_grouped(m) || is_grouped(v);
}

/// Bounds of the expansion exponent (see the top of this file) and its quantum.
inline constexpr float kExpoMin = 0.0625f;
inline constexpr float kExpoMax = 8.0f;
inline constexpr float kExpoQuantum = 0.0625f;

/// 16 * log2(R_fmt), R_fmt = fmt_max^2 / 2, from the exact 2 log2(fmt_max) - 1 (448 = 7 * 2^6, 57344 = 7 *
/// 2^13).
COAT_HOST_DEVICE constexpr float sixteen_log2_range(DType fmt) {
  return fmt == DType::E5M2 ? static_cast<float>(16.0 * 30.614709844115208)
                            : static_cast<float>(16.0 * 16.614709844115208);
}

/// Largest finite magnitude code: 0x7E (E4M3, 448), 0x7B (E5M2, 57344).
COAT_HOST_DEVICE constexpr uint32_t max_finite_code(DType fmt) {
  return fmt == DType::E5M2 ? 0x7Bu : 0x7Eu;
}

// ---- per-group statistics ----

/// max|x| and the masked min of the nonzero |x|, as amax keys (fp8math::amax_key: the bits of |x|, NaN ->
/// 0x7FFFFFFF, ordered as unsigned integers; exact and independent of the reduction order).
struct GroupStats {
  uint32_t max_key = 0u;
  uint32_t min_key = 0xFFFFFFFFu;  // no nonzero value yet
};

COAT_HOST_DEVICE inline uint32_t masked_min_key(uint32_t key) {
  return key == 0u ? 0xFFFFFFFFu : key;
}

COAT_HOST_DEVICE inline void add_value(GroupStats& s, float x) {
  const uint32_t key = fp8math::amax_key(x);
  s.max_key = key > s.max_key ? key : s.max_key;
  const uint32_t mk = masked_min_key(key);
  s.min_key = mk < s.min_key ? mk : s.min_key;
}

COAT_HOST_DEVICE inline void merge(GroupStats& a, const GroupStats& b) {
  a.max_key = b.max_key > a.max_key ? b.max_key : a.max_key;
  a.min_key = b.min_key < a.min_key ? b.min_key : a.min_key;
}

// ---- per-group metadata ----

/// What is stored per group. Plain FP8: the scale s. Expansion: log2 s, the exponent k and log2 g, stored in
/// the log2 domain where the encode and decode use them (no log2 of stored values per step).
struct GroupMeta {
  float scale = 0.0f;   ///< s (plain FP8) or log2 s (expansion)
  float expo = 1.0f;    ///< k (expansion)
  float center = 0.0f;  ///< log2 g (expansion)
};

/// A group is non-finite when its max|x| is inf or NaN.
COAT_HOST_DEVICE inline bool non_finite(const GroupStats& s) {
  return s.max_key >= 0x7F800000u;
}

/// Plain FP8: s = max|x| / fmt_max.
COAT_HOST_DEVICE inline GroupMeta plain_meta(const GroupStats& st, DType fmt) {
  GroupMeta m;
  if (non_finite(st)) {
    m.scale = fp8math::canonical_nan();
  } else if (st.max_key != 0u) {
    m.scale = div_rn(bits_to_float(st.max_key), fp8math::fp8_max(fmt));
    if (m.scale == 0.0f) m.scale = bits_to_float(1u);  // smallest subnormal: x / s stays finite
  }
  return m;
}

/// The expansion exponent for a group whose nonzero magnitudes have log2 l_mx >= l_mn (equal exactly when
/// mx == mn), a multiple of 1/16 in [kExpoMin, kExpoMax]; 1 when mx == mn.
COAT_HOST_DEVICE inline float expansion_exponent(float l_mx, float l_mn, DType fmt) {
  const float span = sub_rn(l_mx, l_mn);
  if (span == 0.0f) return 1.0f;
  constexpr float kMaxSteps = kExpoMax / kExpoQuantum, kMinSteps = kExpoMin / kExpoQuantum;
  float steps = span > 0.0f ? floor_exact(div_rn(sixteen_log2_range(fmt), span)) : kMaxSteps;
  steps = steps > kMaxSteps ? kMaxSteps : steps;
  steps = steps < kMinSteps ? kMinSteps : steps;
  return mul_rn(steps, kExpoQuantum);  // exact
}

/// log2(fmt_max), rounded to float: log2(7) + 6 for E4M3 (448), + 13 for E5M2 (57344).
COAT_HOST_DEVICE constexpr float log2_fmt_max(DType fmt) {
  return fmt == DType::E5M2 ? static_cast<float>(15.807354922057604) : static_cast<float>(8.807354922057604);
}

/// Expansion, in the log2 domain: l_mx = log2 mx, l_mn = log2 mn, k from them, log2 g = (l_mx + l_mn) / 2
/// (g = sqrt(mx mn), the geometric centre), log2 s = k (l_mx - log2 g) - log2 fmt_max (s = max|y| / fmt_max
/// with max|y| = (mx / g)^k). All zero: log2 s = log2 g = -inf, k = 1; non-finite: log2 s = log2 g = NaN.
COAT_HOST_DEVICE inline GroupMeta expand_meta(const GroupStats& st, DType fmt) {
  GroupMeta m;
  if (non_finite(st)) {
    m.scale = fp8math::canonical_nan();
    m.center = fp8math::canonical_nan();
  } else if (st.max_key == 0u) {
    m.scale = -positive_infinity();
    m.center = -positive_infinity();
  } else {
    const float l_mx = log2_det(bits_to_float(st.max_key)), l_mn = log2_det(bits_to_float(st.min_key));
    m.expo = expansion_exponent(l_mx, l_mn, fmt);
    m.center = mul_rn(0.5f, add_rn(l_mx, l_mn));
    m.scale = fma_rn(m.expo, sub_rn(l_mx, m.center), -log2_fmt_max(fmt));
  }
  return m;
}

template <Codec C>
COAT_HOST_DEVICE inline GroupMeta group_meta(const GroupStats& st) {
  static_assert(is_grouped(C), "group_meta: F32 / BF16 moments have no groups");
  if constexpr (is_expand(C)) {
    return expand_meta(st, fp8_format(C));
  } else {
    return plain_meta(st, fp8_format(C));
  }
}

/// log2 of the magnitude of FP8 code `magnitude` (0x01 .. max finite).
template <DType Fmt>
COAT_HOST_DEVICE inline float code_log2(uint32_t magnitude) {
  return log2_det(fp8math::fp8_decode<Fmt>(static_cast<uint8_t>(magnitude)));
}

/// What encoding and decoding one element needs from its group's metadata. Plain FP8: a = s (f, k unused).
/// Expansion: f = the decoded value of the largest finite code, (q_max s)^(1/k) g, so that a code decodes to
/// f T_k[|q|] and the boundary between codes j and j + 1 lies at |x| = f U_k[j] (ExpandTables below); k; and
/// a = -(k log2 g + log2 s), so that log2(y / s) = k log2|x| + a (what a fast first guess of the code needs).
struct GroupCoder {
  float a = 0.0f;
  float f = 0.0f;
  float k = 1.0f;
};

/// Plain FP8's coder of stored metadata m.
COAT_HOST_DEVICE inline GroupCoder plain_coder(const GroupMeta& m) {
  return GroupCoder{m.scale, 0.0f, 1.0f};
}

/// The expansion's coder from log2 s, k and log2 g (stored metadata or fresh): f = 2^((log2 v_max + log2 s)
/// / k + log2 g), one exp2_det of one fma (1 / k = 16 / (16 k), correctly rounded). A non-finite group (log2 s
/// NaN) gets f = 1 and keeps a = NaN: its nonzero codes are the NaN code, which decodes to NaN through the
/// table; an all-zero group gets f = 0. f is at most the largest float, so that f * T never makes a NaN.
COAT_HOST_DEVICE inline GroupCoder expand_coder(const GroupMeta& m, DType fmt) {
  const float inv_k = div_rn(1.0f, m.expo);
  float f = exp2_det(fma_rn(add_rn(m.scale, log2_fmt_max(fmt)), inv_k, m.center));
  f = f != f ? 1.0f : f;
  f = f < 3.40282347e38f ? f : 3.40282347e38f;
  return GroupCoder{-fma_rn(m.expo, m.center, m.scale), f, m.expo};
}

template <Codec C>
COAT_HOST_DEVICE inline GroupCoder group_coder(const GroupMeta& m) {
  static_assert(is_grouped(C), "group_coder: F32 / BF16 moments have no groups");
  if constexpr (is_expand(C)) {
    return expand_coder(m, fp8_format(C));
  } else {
    return plain_coder(m);
  }
}

/// group_meta and its coder in one, for FP8 format fmt.
template <bool kExpand>
COAT_HOST_DEVICE inline GroupCoder group_meta_coder(const GroupStats& st, DType fmt, GroupMeta& meta) {
  if constexpr (kExpand) {
    meta = expand_meta(st, fmt);
    return expand_coder(meta, fmt);
  } else {
    meta = plain_meta(st, fmt);
    return plain_coder(meta);
  }
}

template <Codec C>
COAT_HOST_DEVICE inline GroupCoder group_meta_coder(const GroupStats& st, GroupMeta& meta) {
  static_assert(is_grouped(C), "group_meta_coder: F32 / BF16 moments have no groups");
  return group_meta_coder<is_expand(C)>(st, fp8_format(C), meta);
}

// ---- the expansion's tables ----
// k takes 128 values, (r + 1) / 16 for row r in [0, 128), and a code 128 magnitudes, so every power the
// expansion needs per element is tabulated once per FP8 format, relative to the largest finite code q_max:
//   values  T_r[q] = 2^((log2 v_q - log2 v_max) / k)     (v_q the FP8 value of magnitude q; T_r[0] = 0,
//                                                         NaN for the magnitudes beyond q_max)
//   bounds  U_r[j] = 2^((log2 m_j - log2 v_max) / k)     (m_j = (v_j + v_{j+1}) / 2, exact, j < q_max)
// each one exp2_det of (log2_det difference times 1 / k): within 3e-6 / k (relative) of the exact power where
// it is normal (measured 2.84e-6 / k over all rows; tests/ops/test_quantized_moment.cpp), far below the FP8
// quantum (2^-4 relative in y, 2^-4 / k in x). A group with coder (f, k) then
//   decodes magnitude q as f * T_r[q] (one rounding), with the code's sign;
//   encodes |x| as the number of bounds below it: #{ j < q_max : |x| >= f * U_r[j] } (each product rounded
//   once; the bounds are non-decreasing, so this is a monotone staircase), with the sign of x, and 0 for
//   x = 0, the NaN code 0x7F for every nonzero x of a non-finite group.
// That is round to nearest in the expanded domain, y / s = (|x| / g)^k / s, with the midpoints mapped back to
// |x| (ties go up). Both backends read the same table entries and round the same products, so their codes
// are identical. The CPU counts by binary search; the GPU guesses the code with its fast log2 / exp2 and the
// hardware FP8 conversion, and keeps the guess when f U_r[c - 1] <= |x| < f U_r[c] (one load of a
// BoundPair), which then IS the count; otherwise (a guess off by one near a bound, collapsed bounds) it
// counts by binary search as the CPU does.
inline constexpr int kExpandRows = 128;
inline constexpr int kExpandMagnitudes = 128;

/// The table row of exponent k (a multiple of 1/16 in [1/16, 8]).
COAT_HOST_DEVICE inline int expand_row(float k) {
  return static_cast<int>(mul_rn(k, 16.0f)) - 1;
}

/// The bounds around code magnitude c: lo = U_r[c - 1] (0 for c = 0), hi = U_r[c] (+inf for c = q_max);
/// NaN for c > q_max. The GPU loads both at once.
struct alignas(8) BoundPair {
  float lo;
  float hi;
};

/// (x / v_max)^(1/k) of row r's k from l = log2 x: 2^((l - log2 v_max) / k), 1 / k = 16 / (r + 1) correctly
/// rounded (log2_fmt_max is code_log2<Fmt>(q_max) bit for bit, tested).
template <DType Fmt>
COAT_HOST_DEVICE inline float expand_table_power(int row, float log2_x) {
  const float inv_k = div_rn(16.0f, static_cast<float>(row + 1));
  return exp2_det(mul_rn(sub_rn(log2_x, log2_fmt_max(Fmt)), inv_k));
}

/// T_r[q].
template <DType Fmt>
COAT_HOST_DEVICE inline float expand_value(int row, uint32_t q) {
  if (q == 0u) return 0.0f;
  if (q > max_finite_code(Fmt)) return fp8math::canonical_nan();
  return expand_table_power<Fmt>(row, code_log2<Fmt>(q));
}

/// U_r[j] for j < q_max.
template <DType Fmt>
COAT_HOST_DEVICE inline float expand_bound(int row, uint32_t j) {
  const float mid = mul_rn(0.5f, add_rn(fp8math::fp8_decode<Fmt>(static_cast<uint8_t>(j)),
                                        fp8math::fp8_decode<Fmt>(static_cast<uint8_t>(j + 1))));  // exact
  return expand_table_power<Fmt>(row, log2_det(mid));
}

template <DType Fmt>
COAT_HOST_DEVICE inline BoundPair expand_pair(int row, uint32_t c) {
  constexpr uint32_t kMax = max_finite_code(Fmt);
  if (c > kMax) return BoundPair{fp8math::canonical_nan(), fp8math::canonical_nan()};
  return BoundPair{c == 0u ? 0.0f : expand_bound<Fmt>(row, c - 1), c == kMax ? positive_infinity()
                                                                              : expand_bound<Fmt>(row, c)};
}

/// One FP8 format's two tables: kExpandRows x kExpandMagnitudes values and as many bound pairs.
inline constexpr size_t kExpandTableBytes =
    size_t{kExpandRows} * kExpandMagnitudes * (sizeof(float) + sizeof(BoundPair));

/// One row of each table, as the encode and decode read them.
struct ExpandRow {
  const float* values = nullptr;    // [kExpandMagnitudes]
  const BoundPair* pairs = nullptr;  // [kExpandMagnitudes]
};

// ---- one element ----

/// Saturating FP8 encode of a value that is not NaN: the hardware conversion on sm_89+ (one cvt, as
/// float_formats.h uses for non-NaN inputs), the bit-identical software codec elsewhere. (For NaN the two
/// may differ: callers select NaN away.)
template <DType Fmt>
COAT_HOST_DEVICE inline uint8_t fp8_saturate(float z) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  return static_cast<uint8_t>(
      __nv_cvt_float_to_fp8(z, __NV_SATFINITE, Fmt == DType::E4M3 ? __NV_E4M3 : __NV_E5M2));
#else
  return fp8math::fp8_encode<Fmt>(z, Fp8Saturation::Saturate);
#endif
}

/// Plain FP8: one element's code. Zeros give code 0; a NaN (x, or a non-finite group's scale) gives 0x7F
/// without sign (CPU and GPU NaN signs differ). Branch-free.
template <DType Fmt>
COAT_HOST_DEVICE inline uint8_t encode_plain(float x, float scale) {
  const float q = div_rn(x, scale);
  const bool nan = q != q;
  const uint32_t code = nan ? 0x7Fu : fp8_saturate<Fmt>(q);
  return static_cast<uint8_t>(scale == 0.0f ? 0u : code);  // s = 0: an all-zero group
}

/// Expansion: the magnitude code of |x| = ax (finite, > 0) by counting the bounds below it (binary search
/// over the non-decreasing f U_r[j]).
template <DType Fmt>
COAT_HOST_DEVICE inline uint32_t expand_count(float ax, float f, const BoundPair* pairs) {
  uint32_t lo = 0u, hi = max_finite_code(Fmt);  // the count lies in [lo, hi]
  while (lo < hi) {
    const uint32_t mid = (lo + hi) >> 1;  // bound j = mid is pairs[mid].hi
    if (ax >= mul_rn(f, pairs[mid].hi)) {
      lo = mid + 1u;
    } else {
      hi = mid;
    }
  }
  return lo;
}

/// Expansion: the code of x, given its magnitude code (the count). Zeros give 0, a non-finite group (a =
/// NaN) 0x7F for nonzero x.
COAT_HOST_DEVICE inline uint8_t expand_code(float x, uint32_t magnitude, const GroupCoder& c) {
  const uint32_t xbits = float_to_bits(x);
  const uint32_t code = c.a != c.a ? 0x7Fu : (magnitude | ((xbits >> 24) & 0x80u));
  return static_cast<uint8_t>((xbits & 0x7FFFFFFFu) == 0u ? 0u : code);
}

/// Expansion: the reference encode of one element (the CPU's; the GPU's fast path gives the same code).
template <DType Fmt>
COAT_HOST_DEVICE inline uint8_t encode_expand(float x, const GroupCoder& c, const ExpandRow& row) {
  const float ax = bits_to_float(float_to_bits(x) & 0x7FFFFFFFu);
  const uint32_t magnitude = ax == 0.0f || c.a != c.a ? 0u : expand_count<Fmt>(ax, c.f, row.pairs);
  return expand_code(x, magnitude, c);
}

/// Expansion: decode, f * T_r[|q|] with the code's sign, given the table entry t = T_r[code & 0x7F] (the GPU
/// loads it through its read-only cache). Code 0 gives 0, the NaN code NaN. Branch-free.
COAT_HOST_DEVICE inline float decode_expand_entry(uint8_t code, float f, float t) {
  const float x = mul_rn(f, t);
  return bits_to_float(float_to_bits(x) | (static_cast<uint32_t>(code & 0x80u) << 24));
}

COAT_HOST_DEVICE inline float decode_expand(uint8_t code, float f, const float* values) {
  return decode_expand_entry(code, f, values[code & 0x7Fu]);
}

/// Storage element of the codes of codec C.
template <Codec C>
struct CodeStorage {
  using type = uint8_t;
};
template <>
struct CodeStorage<Codec::F32> {
  using type = float;
};
template <>
struct CodeStorage<Codec::BF16> {
  using type = uint16_t;
};
template <Codec C>
using code_t = typename CodeStorage<C>::type;

/// F32 / BF16 codes: the value itself (BF16 rounded to nearest even).
template <Codec C>
COAT_HOST_DEVICE inline float load_plain(code_t<C> c) {
  if constexpr (C == Codec::F32) {
    return c;
  } else {
    static_assert(C == Codec::BF16, "load_plain: F32 or BF16");
    return bf16_to_float(c);
  }
}
template <Codec C>
COAT_HOST_DEVICE inline code_t<C> store_plain(float x) {
  if constexpr (C == Codec::F32) {
    return x;
  } else {
    static_assert(C == Codec::BF16, "store_plain: F32 or BF16");
    return float_to_bf16(x);
  }
}

}  // namespace coat::moment_codec
