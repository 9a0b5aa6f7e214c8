// Compressed optimizer moments on the CPU backend (coat/ops/quantized_moment.h, coat/backend/moment_codec.h):
// the deterministic log2 / exp2 against double, exactness of the FP8 encodings, the expansion's statistics
// (masked min, all-zero groups, bounds of k, tail groups), its accuracy against plain FP8, the fused AdamW
// step against ops::adamw_step, decay ranges, and argument errors.
//
// Tolerances:
// - log2_det within 1.61 ulp and exp2_det within 0.87 ulp (normal results) of std::log2 / std::exp2 in
//   double on a dense sample of every float (the bounds measured exhaustively, see moment_codec.h); exact at
//   powers of two.
// - the expansion's tables: every entry within 3e-6 / k (relative) of the exact power, in the order that
//   makes the encode a round to nearest; the encode against double rounding except within 1e-4 of a midpoint,
//   exact at the bounds; decode within 5e-6 / k.
// - plain FP8 round trips of FP8-representable values and F32 moments: exact bytes.
// - FP8Expand trajectory against the F32 AdamW trajectory (20 steps from zero moments, 8192 parameters,
// groups
//   of 128 spanning gradient scales 1e-3 .. 1): max |p - p_ref| <= 0.1 lr * steps, mean <= 0.01 lr * steps
//   (measured: max 0.067 / 0.052 / 0.046 for E4M3/E4M3, E4M3/E5M2, E5M2/E5M2; BF16 moments 0.003, bound
//   0.01).
#include <gtest/gtest.h>

#include "expect_error.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "coat/backend/moment_codec.h"
#include "coat/core/float_formats.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/optimizer.h"
#include "coat/ops/quantized_moment.h"
#include "coat/ops/runtime.h"

namespace coat {
namespace {

namespace mc = moment_codec;
using ops::MomentEncoding;
using ops::MomentSpec;
using ops::QuantizedMoment;

ContextPtr cpu() {
  return ops::make_context(Device::cpu());
}

Tensor f32_tensor(const ContextPtr& ctx, const std::vector<float>& v) {
  return ops::from_vector(ctx, {static_cast<int64_t>(v.size())}, DType::F32, v);
}

std::vector<float> floats(const Tensor& t) {
  const std::vector<double> d = ops::to_double_vector(t);
  return std::vector<float>(d.begin(), d.end());
}

MomentSpec spec_of(MomentEncoding e, DType fmt = DType::E4M3, int64_t group = 128) {
  MomentSpec s;
  s.encoding = e;
  s.fp8 = fmt;
  s.group_size = group;
  return s;
}

QuantizedMoment quantized(const ContextPtr& ctx, const std::vector<float>& values, const MomentSpec& spec) {
  QuantizedMoment m =
      ops::make_moment(ctx, static_cast<int64_t>(values.size()), spec, MemoryCategory::OptimizerState);
  ops::quantize_moment(f32_tensor(ctx, values), m);
  return m;
}

uint32_t bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
}
float from_bits(uint32_t b) {
  float x;
  std::memcpy(&x, &b, 4);
  return x;
}

/// The ulp of the float nearest to r (the smallest subnormal at least).
double ulp_at(double r) {
  const double a = std::fabs(r);
  if (a < std::ldexp(1.0, -126)) return std::ldexp(1.0, -149);
  int e = 0;
  std::frexp(a, &e);
  return std::ldexp(1.0, e - 24);
}

/// Magnitudes log-uniform in [lo, hi] with random signs (signed) or positive.
std::vector<float> log_uniform(size_t n, double lo, double hi, uint32_t seed, bool signed_values) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(std::log(lo), std::log(hi));
  std::bernoulli_distribution sign(0.5);
  std::vector<float> v(n);
  for (float& x : v) {
    x = static_cast<float>(std::exp(u(gen)));
    if (signed_values && sign(gen)) x = -x;
  }
  return v;
}

double mean_relative_error(const std::vector<float>& got, const std::vector<float>& want) {
  double sum = 0.0;
  for (size_t i = 0; i < want.size(); ++i)
    sum += std::fabs(double(got[i]) - want[i]) / std::fabs(double(want[i]));
  return sum / static_cast<double>(want.size());
}

// ---- deterministic log2 / exp2 ----

TEST(MomentCodecMath, Log2WithinTwoUlpOfDouble) {
  double worst = 0.0;
  uint32_t worst_bits = 0;
  // Every 613th positive finite float, subnormals included, plus the neighbourhood of 1.
  auto check = [&](uint32_t b) {
    const float x = from_bits(b);
    const double ref = std::log2(static_cast<double>(x));
    const double err = std::fabs(double(mc::log2_det(x)) - ref) / ulp_at(ref);
    if (err > worst) {
      worst = err;
      worst_bits = b;
    }
  };
  for (uint32_t b = 1; b < 0x7F800000u; b += 613) check(b);
  for (uint32_t b = 0x3F000000u; b < 0x40000000u; b += 7) check(b);
  EXPECT_LE(worst, 1.61) << "at " << from_bits(worst_bits);
  for (int k = -149; k <= 127; ++k) EXPECT_EQ(mc::log2_det(std::ldexp(1.0f, k)), float(k)) << k;
  EXPECT_EQ(mc::log2_det(0.0f), -INFINITY);
  EXPECT_EQ(mc::log2_det(-0.0f), -INFINITY);
  EXPECT_EQ(mc::log2_det(INFINITY), INFINITY);
  EXPECT_TRUE(std::isnan(mc::log2_det(-1.0f)));
  EXPECT_TRUE(std::isnan(mc::log2_det(NAN)));
}

TEST(MomentCodecMath, Exp2WithinOneUlpOfDouble) {
  double worst = 0.0, worst_subnormal = 0.0;
  float worst_t = 0.0f;
  auto check = [&](float t) {
    if (!(t >= -151.0f && t < 128.0f)) return;
    const double ref = std::exp2(static_cast<double>(t));
    const float got = mc::exp2_det(t);
    if (ref >= 3.4028234663852886e38) {
      EXPECT_TRUE(std::isinf(got) || std::fabs(got - ref) <= ulp_at(got)) << t;
      return;
    }
    if (ref < std::ldexp(1.0, -126)) {
      worst_subnormal = std::max(worst_subnormal, std::fabs(double(got) - ref) / std::ldexp(1.0, -149));
      return;
    }
    const double err = std::fabs(double(got) - ref) / ulp_at(ref);
    if (err > worst) {
      worst = err;
      worst_t = t;
    }
  };
  for (uint64_t b = 0; b < 0x100000000ull; b += 613) check(from_bits(static_cast<uint32_t>(b)));
  for (float t = -1.0f; t < 1.0f; t += 1.0f / 65536) check(t);
  EXPECT_LE(worst, 0.87) << "at t = " << worst_t;
  EXPECT_LE(worst_subnormal, 1.0);
  for (int k = -149; k <= 127; ++k) EXPECT_EQ(mc::exp2_det(float(k)), std::ldexp(1.0f, k)) << k;
  EXPECT_EQ(mc::exp2_det(128.0f), INFINITY);
  EXPECT_EQ(mc::exp2_det(-200.0f), 0.0f);
  EXPECT_TRUE(std::isnan(mc::exp2_det(NAN)));
  EXPECT_NEAR(mc::pow_det(10.0f, 0.5f), std::sqrt(10.0), 4e-7 * std::sqrt(10.0));
  EXPECT_EQ(mc::pow_det(0.0f, 2.0f), 0.0f);
}

// ---- specs and buffers ----

// ---- the expansion's tables ----

/// One row of the expansion's tables of format Fmt, computed as both backends compute it.
template <DType Fmt>
struct TableRow {
  std::array<float, mc::kExpandMagnitudes> values{};
  std::array<mc::BoundPair, mc::kExpandMagnitudes> pairs{};
  explicit TableRow(int r) {
    for (uint32_t q = 0; q < uint32_t(mc::kExpandMagnitudes); ++q) {
      values[q] = mc::expand_value<Fmt>(r, q);
      pairs[q] = mc::expand_pair<Fmt>(r, q);
    }
  }
  mc::ExpandRow view() const { return mc::ExpandRow{values.data(), pairs.data()}; }
};

double fp8_value(DType fmt, uint32_t code) {
  return fmt == DType::E4M3 ? e4m3_to_float(uint8_t(code)) : e5m2_to_float(uint8_t(code));
}

// Every row of both formats: the decoded magnitudes T_r[q] = (v_q / v_max)^(1/k) and the bounds U_r[j] =
// (m_j / v_max)^(1/k) against double (relative error at most 3e-6 / k where normal, measured 2.84e-6 / k: the
// log2 difference carries a few ulp of log2 v ~ 2^-20 absolute, amplified by 1/k <= 16), the fixed entries
// exactly, and the order that makes the encode a round to nearest: T_r[q] < U_r[q] < T_r[q + 1] wherever the
// three are normal.
template <DType Fmt>
void check_tables(double& worst_value, double& worst_bound) {
  constexpr uint32_t kMax = mc::max_finite_code(Fmt);
  const double tiny = std::ldexp(1.0, -126);
  for (int r = 0; r < mc::kExpandRows; ++r) {
    const TableRow<Fmt> row(r);
    const double k = (r + 1) / 16.0;
    ASSERT_EQ(mc::expand_row(float(k)), r);
    ASSERT_EQ(row.values[0], 0.0f);
    ASSERT_EQ(row.values[kMax], 1.0f) << r;
    ASSERT_EQ(row.pairs[0].lo, 0.0f);
    ASSERT_EQ(row.pairs[kMax].hi, INFINITY);
    for (uint32_t q = kMax + 1; q < uint32_t(mc::kExpandMagnitudes); ++q) {
      ASSERT_TRUE(std::isnan(row.values[q]) && std::isnan(row.pairs[q].lo) && std::isnan(row.pairs[q].hi));
    }
    const double vmax = fp8_value(Fmt, kMax);
    for (uint32_t q = 1; q <= kMax; ++q) {
      const double ref = std::pow(fp8_value(Fmt, q) / vmax, 1.0 / k);
      if (ref >= tiny) worst_value = std::max(worst_value, k * std::fabs(row.values[q] - ref) / ref);
      if (q < kMax) {
        ASSERT_EQ(row.pairs[q].hi, row.pairs[q + 1].lo);
        const double mid = (fp8_value(Fmt, q) + fp8_value(Fmt, q + 1)) / 2;
        const double ref_b = std::pow(mid / vmax, 1.0 / k);
        if (ref_b >= tiny) worst_bound = std::max(worst_bound, k * std::fabs(row.pairs[q].hi - ref_b) / ref_b);
        if (ref >= tiny) {
          ASSERT_LT(row.values[q], row.pairs[q].hi) << r << " " << q;
          ASSERT_LT(row.pairs[q].hi, row.values[q + 1]) << r << " " << q;
        }
      }
    }
  }
}

TEST(MomentCodecMath, ExpansionTablesWithinTheirBounds) {
  // The tables and coders use log2_fmt_max for log2 v_max: it is the table's own log2_det of v_max, so that
  // T_r[q_max] = 2^0 = 1 exactly.
  EXPECT_EQ(mc::code_log2<DType::E4M3>(0x7E), mc::log2_fmt_max(DType::E4M3));
  EXPECT_EQ(mc::code_log2<DType::E5M2>(0x7B), mc::log2_fmt_max(DType::E5M2));
  double worst_value = 0.0, worst_bound = 0.0;
  check_tables<DType::E4M3>(worst_value, worst_bound);
  check_tables<DType::E5M2>(worst_value, worst_bound);
  std::printf("[expansion tables] worst k * relative error: values %.3g, bounds %.3g\n", worst_value,
              worst_bound);
  EXPECT_LE(worst_value, 3e-6);
  EXPECT_LE(worst_bound, 3e-6);
}

/// A random expansion group's metadata and coder (statistics of log-uniform values spanning `span`).
struct RandomGroup {
  std::vector<float> x;
  mc::GroupMeta meta;
  mc::GroupCoder coder;
};
RandomGroup random_group(DType fmt, double span, uint32_t seed) {
  RandomGroup g;
  g.x = log_uniform(128, 1e-4, 1e-4 * span, seed, true);
  mc::GroupStats st;
  for (float v : g.x) mc::add_value(st, v);
  g.meta = mc::expand_meta(st, fmt);
  g.coder = mc::expand_coder(g.meta, fmt);
  return g;
}

// The encode counts the bounds: |x| exactly at f U_r[j] gives code j + 1, the float below it code j; and it
// is the round to nearest of y / s = (|x| / g)^k / s computed in double, except within 1e-4 (relative) of a
// midpoint, where the float rounding of the tables may decide either way. Decoding is f T_r[|q|] with the
// code's sign, within 5e-6 / k of (|q| s)^(1/k) g.
template <DType Fmt>
void check_encode(uint32_t seed, int& checked) {
  constexpr uint32_t kMax = mc::max_finite_code(Fmt);
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(0.0, 40.0);
  for (int gi = 0; gi < 60; ++gi) {
    const RandomGroup g = random_group(Fmt, std::exp2(u(gen)), seed * 100 + gi);
    const TableRow<Fmt> row(mc::expand_row(g.coder.k));
    const double k = g.meta.expo, s = std::exp2(double(g.meta.scale)), c = std::exp2(double(g.meta.center));
    for (uint32_t j = 1; j + 1 < kMax; ++j) {
      const float b = g.coder.f * row.pairs[j].hi;
      if (!(b >= std::ldexp(1.0f, -126))) continue;
      ASSERT_EQ(mc::encode_expand<Fmt>(b, g.coder, row.view()), j + 1) << j;
      ASSERT_EQ(mc::encode_expand<Fmt>(-std::nextafter(b, 0.0f), g.coder, row.view()), 0x80 | j) << j;
    }
    for (float x : g.x) {
      const uint8_t code = mc::encode_expand<Fmt>(x, g.coder, row.view());
      ASSERT_EQ(code & 0x80, x < 0 ? 0x80 : 0);
      const double y = std::pow(std::fabs(double(x)) / c, k) / s;
      uint32_t nearest = 0;
      double near_mid = INFINITY;
      for (uint32_t q = 0; q < kMax; ++q) {
        const double mid = (fp8_value(Fmt, q) + fp8_value(Fmt, q + 1)) / 2;
        if (y >= mid) nearest = q + 1;
        near_mid = std::min(near_mid, std::fabs(y - mid) / mid);
      }
      if (near_mid > 1e-4) {
        ASSERT_EQ(uint32_t(code & 0x7F), nearest) << "x " << x << " y " << y;
        ++checked;
      }
      const float back = mc::decode_expand(code, g.coder.f, row.values.data());
      const double ref = std::pow(fp8_value(Fmt, code & 0x7Fu) * s, 1.0 / k) * c;
      if ((code & 0x7F) != 0) {
        ASSERT_LE(k * std::fabs(std::fabs(back) - ref) / ref, 5e-6) << x;
      }
      ASSERT_EQ(std::signbit(back), x < 0);
    }
  }
  EXPECT_EQ(mc::encode_expand<Fmt>(0.0f, random_group(Fmt, 10.0, 1).coder, TableRow<Fmt>(15).view()), 0);
}

TEST(MomentCodecMath, ExpansionEncodeIsRoundToNearestOfTheExpandedValue) {
  int checked = 0;
  check_encode<DType::E4M3>(5, checked);
  check_encode<DType::E5M2>(6, checked);
  EXPECT_GT(checked, 2 * 60 * 120);
}

TEST(QuantizedMomentSpec, ValidateNamesTheField) {
  EXPECT_NO_THROW(ops::validate(spec_of(MomentEncoding::FP8Expand, DType::E5M2, 1)));
  EXPECT_NO_THROW(ops::validate(spec_of(MomentEncoding::FP8, DType::E4M3, 65536)));
  for (int64_t bad : {int64_t{0}, int64_t{-128}, int64_t{65537}}) {
    test::expect_error_containing([&] { ops::validate(spec_of(MomentEncoding::FP8, DType::E4M3, bad)); },
                                  "group_size " + std::to_string(bad));
  }
  EXPECT_THROW(ops::validate(spec_of(MomentEncoding::FP8, DType::E4M3, 0)), InvalidArgument);
  test::expect_error_containing([&] { ops::validate(spec_of(MomentEncoding::FP8Expand, DType::BF16)); },
                                "fp8 is bf16");
  test::expect_error_containing([&] { ops::validate(spec_of(MomentEncoding::F32, DType::F32)); },
                                "fp8 is f32");
  test::expect_error_containing([&] { ops::validate(spec_of(static_cast<MomentEncoding>(7))); },
                                "encoding 7");
  auto ctx = cpu();
  test::expect_error_containing(
      [&] {
        ops::make_moment(ctx, 10, spec_of(MomentEncoding::FP8, DType::E4M3, 0),
                         MemoryCategory::OptimizerState);
      },
      "group_size");
}

TEST(QuantizedMomentSpec, MakeMomentIsZeroWithMetadata) {
  auto ctx = cpu();
  const int64_t n = 3 * 128 + 77;
  struct Case {
    MomentSpec spec;
    DType codes;
    int64_t groups;
    size_t bytes;
    std::vector<std::string> suffixes;
  };
  const std::vector<Case> cases = {
      {spec_of(MomentEncoding::F32), DType::F32, 0, 4 * n, {""}},
      {spec_of(MomentEncoding::BF16), DType::BF16, 0, 2 * n, {""}},
      {spec_of(MomentEncoding::FP8, DType::E5M2), DType::E5M2, 4, n + 16, {"", ".scale"}},
      {spec_of(MomentEncoding::FP8Expand, DType::E4M3, 100),
       DType::E4M3,
       5,
       n + 60,
       {"", ".log2_scale", ".expo", ".log2_center"}},
  };
  for (const Case& c : cases) {
    const QuantizedMoment m = ops::make_moment(ctx, n, c.spec, MemoryCategory::OptimizerState);
    SCOPED_TRACE(ops::moment_spec_str(c.spec));
    EXPECT_EQ(m.codes.dtype(), c.codes);
    EXPECT_EQ(m.codes.numel(), n);
    EXPECT_EQ(m.groups(), c.groups);
    EXPECT_EQ(m.bytes(), c.bytes);
    std::vector<std::string> suffixes;
    for (const auto& [suffix, t] : m.tensors()) {
      suffixes.push_back(suffix);
      EXPECT_EQ(t.storage()->category(), MemoryCategory::OptimizerState);
    }
    EXPECT_EQ(suffixes, c.suffixes);
    for (double x : ops::to_double_vector(ops::dequantize_moment(m))) ASSERT_EQ(x, 0.0);
    if (m.scale.defined()) {
      for (double x : ops::to_double_vector(m.scale)) EXPECT_EQ(x, 0.0);
    }
    if (m.expo.defined()) {
      for (double x : ops::to_double_vector(m.expo)) EXPECT_EQ(x, 1.0);
      for (double x : ops::to_double_vector(m.center)) EXPECT_EQ(x, 0.0);
    }
  }
}

// ---- exactness of the encodings ----

TEST(QuantizedMomentExact, Fp8RoundTripsRepresentableValues) {
  auto ctx = cpu();
  for (DType fmt : {DType::E4M3, DType::E5M2}) {
    SCOPED_TRACE(std::string(dtype_name(fmt)));
    const uint32_t max_code = mc::max_finite_code(fmt);
    // Every finite code of both signs, times 2^-5: the group max is fmt_max * 2^-5, so s = 2^-5 exactly.
    std::vector<float> values;
    std::vector<uint8_t> codes;
    for (uint32_t c = 0; c <= max_code; ++c) {
      for (uint32_t sign : {0u, 0x80u}) {
        if (c == 0 && sign) continue;
        const uint8_t code = static_cast<uint8_t>(c | sign);
        const float x = fmt == DType::E4M3 ? e4m3_to_float(code) : e5m2_to_float(code);
        values.push_back(std::ldexp(x, -5));
        codes.push_back(code);
      }
    }
    const int64_t n = static_cast<int64_t>(values.size());
    const QuantizedMoment m = quantized(ctx, values, spec_of(MomentEncoding::FP8, fmt, n));
    EXPECT_EQ(ops::to_double_vector(m.scale)[0], std::ldexp(1.0, -5));
    EXPECT_EQ(ops::to_bytes(m.codes), codes);
    EXPECT_EQ(floats(ops::dequantize_moment(m)), values);
  }
  // F32 and BF16 moments: the values, and BF16 rounded to nearest even.
  const std::vector<float> v = log_uniform(1000, 1e-6, 10.0, 3, true);
  EXPECT_EQ(floats(ops::dequantize_moment(quantized(ctx, v, spec_of(MomentEncoding::F32)))), v);
  const std::vector<float> b =
      floats(ops::dequantize_moment(quantized(ctx, v, spec_of(MomentEncoding::BF16))));
  for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(bits(b[i]), uint32_t(float_to_bf16(v[i])) << 16) << i;
}

TEST(QuantizedMomentExact, EncodeSaturatesInsteadOfOverflowing) {
  // Plain FP8: x / s far beyond fmt_max, and infinity, give the largest finite code with the sign.
  EXPECT_EQ(mc::encode_plain<DType::E4M3>(1000.0f, 0.5f), 0x7E);
  EXPECT_EQ(mc::encode_plain<DType::E4M3>(-1e30f, 0.5f), 0xFE);
  EXPECT_EQ(mc::encode_plain<DType::E4M3>(INFINITY, 0.5f), 0x7E);
  EXPECT_EQ(mc::encode_plain<DType::E5M2>(1e6f, 0.5f), 0x7B);
  EXPECT_EQ(mc::encode_plain<DType::E5M2>(-INFINITY, 0.5f), 0xFB);
  // Expansion: a value far above the group's max saturates. Stored: log2 s = log2(1 / 448), k = 2,
  // log2 g = 0, so the max code decodes to f = (448 s)^(1/2) = 1.
  const mc::GroupMeta meta{-mc::log2_fmt_max(DType::E4M3), 2.0f, 0.0f};
  const mc::GroupCoder e4 = mc::expand_coder(meta, DType::E4M3);
  EXPECT_NEAR(e4.f, 1.0f, 1e-6f);
  const TableRow<DType::E4M3> row4(mc::expand_row(2.0f));
  EXPECT_EQ(mc::encode_expand<DType::E4M3>(1e10f, e4, row4.view()), 0x7E);
  EXPECT_EQ(mc::encode_expand<DType::E4M3>(-1e10f, e4, row4.view()), 0xFE);
  EXPECT_EQ(mc::encode_expand<DType::E4M3>(INFINITY, e4, row4.view()), 0x7E);
  EXPECT_EQ(mc::encode_expand<DType::E4M3>(1.0f, e4, row4.view()), 0x7E);  // y / s = 448 exactly at the max
  const mc::GroupCoder e5 = mc::expand_coder(meta, DType::E5M2);
  EXPECT_EQ(mc::encode_expand<DType::E5M2>(1e30f, e5, TableRow<DType::E5M2>(31).view()), 0x7B);
  // A plain group whose max is so small that max / fmt_max underflows keeps finite codes.
  auto ctx = cpu();
  const QuantizedMoment tiny =
      quantized(ctx, {from_bits(3), -from_bits(1), 0.0f}, spec_of(MomentEncoding::FP8));
  EXPECT_EQ(ops::to_double_vector(tiny.scale)[0], double(from_bits(1)));
  EXPECT_EQ(ops::to_bytes(tiny.codes), (std::vector<uint8_t>{0x44, 0xB8, 0x00}));  // 3 and -1 in E4M3
}

TEST(QuantizedMomentExact, MaskedMinIgnoresZerosEvenInTheFirstLane) {
  auto ctx = cpu();
  // Nonzero magnitudes span exactly 2^10 (1 and 2^-10); zeros first and in between.
  std::vector<float> group = {0.0f, 1.0f, 0.0f,   -std::ldexp(1.0f, -10),
                              0.5f, 0.0f, -0.25f, std::ldexp(1.0f, -7)};
  // k = floor(16 * log2(R) / 10) / 16: R = 448^2 / 2 -> floor(26.58) / 16; R = 57344^2 / 2 -> floor(48.98)
  // / 16.
  for (auto [fmt, k] : {std::pair{DType::E4M3, 26.0 / 16}, std::pair{DType::E5M2, 48.0 / 16}}) {
    SCOPED_TRACE(std::string(dtype_name(fmt)));
    const QuantizedMoment m = quantized(ctx, group, spec_of(MomentEncoding::FP8Expand, fmt, 8));
    EXPECT_EQ(ops::to_double_vector(m.expo)[0], k);
    EXPECT_EQ(ops::to_double_vector(m.center)[0], -5.0);  // log2 g, g = sqrt(1 * 2^-10)
    const std::vector<uint8_t> codes = ops::to_bytes(m.codes);
    const std::vector<float> back = floats(ops::dequantize_moment(m));
    for (size_t i = 0; i < group.size(); ++i) {
      if (group[i] == 0.0f) {
        EXPECT_EQ(codes[i], 0) << i;
        EXPECT_EQ(bits(back[i]), 0u) << i;
      } else {
        // half an FP8 step (2^-4 / 2^-3 relative) shrinks by k in x; 1.5x for the subnormal codes
        EXPECT_NEAR(back[i], group[i], 1.5 * std::fabs(group[i]) * (fmt == DType::E4M3 ? 0.0625 : 0.125) / k)
            << i;
      }
    }
    // The max maps onto the largest code.
    EXPECT_EQ(codes[1], mc::max_finite_code(fmt));
  }
}

TEST(QuantizedMomentExact, AllZeroGroups) {
  auto ctx = cpu();
  std::vector<float> v(256, 0.0f);
  for (int i = 128; i < 256; ++i) v[i] = 0.001f * float(i - 127);
  for (MomentEncoding e : {MomentEncoding::FP8, MomentEncoding::FP8Expand}) {
    for (DType fmt : {DType::E4M3, DType::E5M2}) {
      const QuantizedMoment m = quantized(ctx, v, spec_of(e, fmt, 128));
      SCOPED_TRACE(ops::moment_spec_str(m.spec));
      if (e == MomentEncoding::FP8Expand) {  // log2 s = log2 g = -inf, k = 1
        EXPECT_EQ(ops::to_double_vector(m.scale)[0], -INFINITY);
        EXPECT_TRUE(std::isfinite(ops::to_double_vector(m.scale)[1]));
        EXPECT_EQ(ops::to_double_vector(m.expo)[0], 1.0);
        EXPECT_EQ(ops::to_double_vector(m.center)[0], -INFINITY);
      } else {
        EXPECT_EQ(ops::to_double_vector(m.scale)[0], 0.0);
        EXPECT_GT(ops::to_double_vector(m.scale)[1], 0.0);
      }
      const std::vector<uint8_t> codes = ops::to_bytes(m.codes);
      const std::vector<float> back = floats(ops::dequantize_moment(m));
      for (int i = 0; i < 128; ++i) {
        ASSERT_EQ(codes[i], 0) << i;
        ASSERT_EQ(bits(back[i]), 0u) << i;
      }
    }
  }
}

TEST(QuantizedMomentExact, ExpoClampedAtBothBounds) {
  auto ctx = cpu();
  // Upper bound: mx / mn = 1 / 0.99 asks for k ~ 1100 (E4M3) -> 8.
  for (DType fmt : {DType::E4M3, DType::E5M2}) {
    const QuantizedMoment m =
        quantized(ctx, {1.0f, 0.99f, -0.995f, 0.0f}, spec_of(MomentEncoding::FP8Expand, fmt, 4));
    EXPECT_EQ(ops::to_double_vector(m.expo)[0], 8.0) << dtype_name(fmt);
    const std::vector<float> back = floats(ops::dequantize_moment(m));
    EXPECT_NEAR(back[1], 0.99f, 0.99 * 0.125 / 8);
  }
  // Equal nonzero magnitudes: k = 1.
  EXPECT_EQ(ops::to_double_vector(
                quantized(ctx, {0.5f, -0.5f, 0.0f, 0.5f}, spec_of(MomentEncoding::FP8Expand, DType::E4M3, 4))
                    .expo)[0],
            1.0);
  // Lower bound: 1e38 and the smallest subnormal span log2 = 275; 16 * 16.61 / 275 < 1 floors to 0 -> 1/16.
  const QuantizedMoment low =
      quantized(ctx, {1e38f, from_bits(1), 1.0f, 0.0f}, spec_of(MomentEncoding::FP8Expand, DType::E4M3, 4));
  EXPECT_EQ(ops::to_double_vector(low.expo)[0], 1.0 / 16);
  const std::vector<float> back = floats(ops::dequantize_moment(low));
  for (float x : back) EXPECT_TRUE(std::isfinite(x));
  EXPECT_GT(back[0], 1e37f);  // (k = 1/16 turns the E4M3 rounding of y into up to 16x that error in x)
  // A span of 260 binades (< 16 log2(R) = 265.8): floor gives 1, k = 1/16 without clamping.
  const QuantizedMoment one = quantized(ctx, {std::ldexp(1.0f, 120), std::ldexp(1.0f, -140)},
                                        spec_of(MomentEncoding::FP8Expand, DType::E4M3, 2));
  EXPECT_EQ(ops::to_double_vector(one.expo)[0], 1.0 / 16);
}

TEST(QuantizedMomentExact, ExpoIsAMultipleOfOneSixteenth) {
  auto ctx = cpu();
  std::mt19937 gen(11);
  std::uniform_real_distribution<double> range(0.0, 40.0);
  std::vector<float> v;
  for (int g = 0; g < 200; ++g) {
    const double span = std::exp2(range(gen));
    const std::vector<float> group = log_uniform(64, 1e-3, 1e-3 * span, 100 + g, true);
    v.insert(v.end(), group.begin(), group.end());
  }
  for (DType fmt : {DType::E4M3, DType::E5M2}) {
    const QuantizedMoment m = quantized(ctx, v, spec_of(MomentEncoding::FP8Expand, fmt, 64));
    std::set<double> distinct;
    for (double k : ops::to_double_vector(m.expo)) {
      ASSERT_EQ(k * 16, std::floor(k * 16)) << k;
      ASSERT_GE(k, 1.0 / 16);
      ASSERT_LE(k, 8.0);
      distinct.insert(k);
    }
    EXPECT_GT(distinct.size(), 20u) << dtype_name(fmt);
  }
}

TEST(QuantizedMomentExact, TailGroupUsesItsOwnElements) {
  auto ctx = cpu();
  const int64_t n = 3 * 128 + 77;
  std::vector<float> v = log_uniform(size_t(n), 0.5, 1.0, 5, true);
  for (int64_t i = 3 * 128; i < n; ++i) v[size_t(i)] *= 1e-3f;  // the tail group is 1000x smaller
  for (MomentEncoding e : {MomentEncoding::FP8, MomentEncoding::FP8Expand}) {
    const QuantizedMoment m = quantized(ctx, v, spec_of(e, DType::E4M3, 128));
    ASSERT_EQ(m.groups(), 4);
    float tail_max = 0.0f;
    for (int64_t i = 3 * 128; i < n; ++i) tail_max = std::max(tail_max, std::fabs(v[size_t(i)]));
    if (e == MomentEncoding::FP8) {
      EXPECT_EQ(float(ops::to_double_vector(m.scale)[3]), tail_max / 448.0f);
    }
    const std::vector<float> back = floats(ops::dequantize_moment(m));
    for (int64_t i = 0; i < n; ++i)
      ASSERT_NEAR(back[size_t(i)], v[size_t(i)], std::fabs(v[size_t(i)]) * 0.07) << i;
  }
}

TEST(QuantizedMomentExact, ExpansionBeatsPlainFp8OnWideGroups) {
  auto ctx = cpu();
  // 64 groups of 128 values spanning 1e3 (m-like, signed) and 1e1 (v-like, positive).
  for (auto [span, signed_values] : {std::pair{1e3, true}, std::pair{1e1, false}}) {
    std::vector<float> v;
    for (int g = 0; g < 64; ++g) {
      const std::vector<float> group = log_uniform(128, 1e-6, 1e-6 * span, 200 + g, signed_values);
      v.insert(v.end(), group.begin(), group.end());
    }
    for (DType fmt : {DType::E4M3, DType::E5M2}) {
      const double plain = mean_relative_error(
          floats(ops::dequantize_moment(quantized(ctx, v, spec_of(MomentEncoding::FP8, fmt)))), v);
      const double expand = mean_relative_error(
          floats(ops::dequantize_moment(quantized(ctx, v, spec_of(MomentEncoding::FP8Expand, fmt)))), v);
      SCOPED_TRACE(std::string(dtype_name(fmt)) + " span " + std::to_string(span));
      EXPECT_LT(expand, plain) << "expand " << expand << " plain " << plain;
      std::printf("[quantized moment] span %g %s: mean relative error plain %.4f, expanded %.4f\n", span,
                  std::string(dtype_name(fmt)).c_str(), plain, expand);
    }
  }
}

TEST(QuantizedMomentExact, NonFiniteGroupsBecomeNaN) {
  auto ctx = cpu();
  for (MomentEncoding e : {MomentEncoding::FP8, MomentEncoding::FP8Expand}) {
    const QuantizedMoment m = quantized(ctx, {1.0f, NAN, 0.5f, 2.0f, 1.0f, 0.5f}, spec_of(e, DType::E4M3, 3));
    const std::vector<float> back = floats(ops::dequantize_moment(m));
    EXPECT_TRUE(std::isnan(back[0]) && std::isnan(back[1]) && std::isnan(back[2]));
    EXPECT_NEAR(back[3], 2.0f, 1e-5);
    EXPECT_TRUE(std::isnan(ops::to_double_vector(m.scale)[0]));
  }
}

// ---- the fused step ----

struct StepData {
  std::vector<float> p, m, v;
  std::vector<std::vector<float>> grads;
};

StepData random_step_data(int64_t n, int steps, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  StepData d;
  d.p.resize(size_t(n));
  d.m.resize(size_t(n));
  d.v.resize(size_t(n));
  // Per-"row" gradient scales spanning 1e-3 .. 1, as in a real model.
  std::vector<float> row_scale(size_t(n / 64 + 1));
  for (float& s : row_scale) s = std::pow(10.0f, -3.0f * std::uniform_real_distribution<float>(0, 1)(gen));
  for (int64_t i = 0; i < n; ++i) {
    d.p[size_t(i)] = normal(gen);
    d.m[size_t(i)] = 1e-3f * normal(gen);
    d.v[size_t(i)] = 1e-6f * normal(gen) * normal(gen);
    d.v[size_t(i)] *= d.v[size_t(i)] < 0 ? -1.0f : 1.0f;
  }
  for (int s = 0; s < steps; ++s) {
    std::vector<float> g(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) g[size_t(i)] = row_scale[size_t(i / 64)] * normal(gen);
    d.grads.push_back(g);
  }
  return d;
}

ops::AdamWHyper hyper(int64_t step) {
  ops::AdamWHyper h;
  h.lr = 1e-3f;
  h.weight_decay = 0.1f;
  h.grad_scale = 0.5f;
  h.step = step;
  return h;
}

TEST(QuantizedAdamW, F32EncodingsGiveTheBitsOfAdamWStep) {
  auto ctx = cpu();
  const int64_t n = 1000;
  const StepData d = random_step_data(n, 4, 21);
  for (bool decay_everywhere : {true, false}) {
    Tensor p_ref = f32_tensor(ctx, d.p), m_ref = f32_tensor(ctx, d.m), v_ref = f32_tensor(ctx, d.v);
    Tensor p = f32_tensor(ctx, d.p);
    QuantizedMoment m = quantized(ctx, d.m, spec_of(MomentEncoding::F32));
    QuantizedMoment v = quantized(ctx, d.v, spec_of(MomentEncoding::F32));
    const std::vector<ops::DecayRange> ranges =
        decay_everywhere ? std::vector<ops::DecayRange>{{0, 400}, {400, n}} : std::vector<ops::DecayRange>{};
    for (int s = 0; s < 4; ++s) {
      const Tensor g = f32_tensor(ctx, d.grads[size_t(s)]);
      ops::AdamWHyper h = hyper(s == 3 ? 1000 : s + 1);
      ops::adamw_step_quantized(p, g, m, v, h, ranges);
      if (!decay_everywhere) h.weight_decay = 0.0f;
      ops::adamw_step(p_ref, g, m_ref, v_ref, h);
      ASSERT_EQ(ops::to_bytes(p), ops::to_bytes(p_ref)) << "step " << s;
      ASSERT_EQ(ops::to_bytes(m.codes), ops::to_bytes(m_ref)) << "step " << s;
      ASSERT_EQ(ops::to_bytes(v.codes), ops::to_bytes(v_ref)) << "step " << s;
    }
  }
}

/// Runs one step with the given ranges from the same start; returns param bytes and moment bytes.
std::pair<std::vector<uint8_t>, std::vector<uint8_t>> step_with(const ContextPtr& ctx, const StepData& d,
                                                                const MomentSpec& spec,
                                                                const std::vector<ops::DecayRange>& ranges) {
  Tensor p = f32_tensor(ctx, d.p);
  QuantizedMoment m = quantized(ctx, d.m, spec), v = quantized(ctx, d.v, spec);
  ops::adamw_step_quantized(p, f32_tensor(ctx, d.grads[0]), m, v, hyper(3), ranges);
  std::vector<uint8_t> moments = ops::to_bytes(m.codes);
  for (const QuantizedMoment* q : {&m, &v})
    for (const auto& [suffix, t] : q->tensors()) {
      const std::vector<uint8_t> b = ops::to_bytes(t);
      moments.insert(moments.end(), b.begin(), b.end());
    }
  return {ops::to_bytes(p), moments};
}

TEST(QuantizedAdamW, DecayRangesAreHonoured) {
  auto ctx = cpu();
  const int64_t n = 1000;
  const StepData d = random_step_data(n, 1, 22);
  // Touching ranges merge, empty ranges are allowed.
  const std::vector<ops::DecayRange> ranges = {{10, 100}, {100, 150}, {200, 200}, {300, 301}, {513, n}};
  auto inside = [&](int64_t i) {
    for (const auto& r : ranges)
      if (i >= r.begin && i < r.end) return true;
    return false;
  };
  for (MomentEncoding e : {MomentEncoding::F32, MomentEncoding::FP8Expand}) {
    const MomentSpec spec = spec_of(e, DType::E4M3, 64);
    const auto [p_ranges, mom_ranges] = step_with(ctx, d, spec, ranges);
    const auto [p_all, mom_all] = step_with(ctx, d, spec, {{0, n}});
    const auto [p_none, mom_none] = step_with(ctx, d, spec, {});
    // The moments do not depend on the decay; each parameter is the all-decay or the no-decay one.
    EXPECT_EQ(mom_ranges, mom_all);
    EXPECT_EQ(mom_ranges, mom_none);
    int differing = 0;
    for (int64_t i = 0; i < n; ++i) {
      const auto& want = inside(i) ? p_all : p_none;
      ASSERT_EQ(std::memcmp(&p_ranges[size_t(4 * i)], &want[size_t(4 * i)], 4), 0) << "element " << i;
      differing += std::memcmp(&p_all[size_t(4 * i)], &p_none[size_t(4 * i)], 4) != 0;
    }
    EXPECT_GT(differing, n / 2);  // the decay is visible at all
  }
}

TEST(QuantizedAdamW, ExpansionTrajectoryStaysCloseToF32) {
  auto ctx = cpu();
  const int64_t n = 8192;
  const int steps = 20;
  StepData d = random_step_data(n, steps, 23);
  std::fill(d.m.begin(), d.m.end(), 0.0f);
  std::fill(d.v.begin(), d.v.end(), 0.0f);
  Tensor p_ref = f32_tensor(ctx, d.p), m_ref = f32_tensor(ctx, d.m), v_ref = f32_tensor(ctx, d.v);
  for (int s = 0; s < steps; ++s)
    ops::adamw_step(p_ref, f32_tensor(ctx, d.grads[size_t(s)]), m_ref, v_ref, hyper(s + 1));
  const std::vector<float> ref = floats(p_ref);
  struct Case {
    MomentSpec m, v;
    double tolerance;  // max |p - p_ref| / (lr * steps); negative: no bound (reported only)
  };
  const std::vector<Case> cases = {
      {spec_of(MomentEncoding::FP8Expand, DType::E4M3), spec_of(MomentEncoding::FP8Expand, DType::E4M3), 0.1},
      {spec_of(MomentEncoding::FP8Expand, DType::E4M3), spec_of(MomentEncoding::FP8Expand, DType::E5M2), 0.1},
      {spec_of(MomentEncoding::FP8Expand, DType::E5M2), spec_of(MomentEncoding::FP8Expand, DType::E5M2), 0.1},
      {spec_of(MomentEncoding::BF16), spec_of(MomentEncoding::BF16), 0.01},
      {spec_of(MomentEncoding::FP8, DType::E4M3), spec_of(MomentEncoding::FP8, DType::E4M3), -1.0},
  };
  double worst_expand = 0.0, worst_plain = 0.0;
  for (const Case& c : cases) {
    Tensor p = f32_tensor(ctx, d.p);
    QuantizedMoment m = ops::make_moment(ctx, n, c.m, MemoryCategory::OptimizerState);
    QuantizedMoment v = ops::make_moment(ctx, n, c.v, MemoryCategory::OptimizerState);
    for (int s = 0; s < steps; ++s)
      ops::adamw_step_quantized(p, f32_tensor(ctx, d.grads[size_t(s)]), m, v, hyper(s + 1), {{0, n}});
    const std::vector<float> got = floats(p);
    double worst = 0.0, mean = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const double e = std::fabs(got[size_t(i)] - ref[size_t(i)]) / (1e-3 * steps);
      worst = std::max(worst, e);
      mean += e / double(n);
    }
    std::printf("[quantized adamw] m %s, v %s: |p - p_f32| / (lr * steps): max %.4f, mean %.5f\n",
                ops::moment_spec_str(c.m).c_str(), ops::moment_spec_str(c.v).c_str(), worst, mean);
    if (c.tolerance >= 0.0) {
      EXPECT_LE(worst, c.tolerance) << ops::moment_spec_str(c.m) << " / " << ops::moment_spec_str(c.v);
      EXPECT_LE(mean, c.tolerance / 10) << ops::moment_spec_str(c.m) << " / " << ops::moment_spec_str(c.v);
    }
    if (c.m.encoding == MomentEncoding::FP8Expand) worst_expand = std::max(worst_expand, worst);
    if (c.m.encoding == MomentEncoding::FP8) worst_plain = worst;
  }
  // Groups here span two rows whose gradient scales differ by up to 1e3 (v by 1e6): plain FP8 flushes the
  // small v of such a group to 0 and their updates blow up; the expansion keeps them.
  EXPECT_GT(worst_plain, 10 * worst_expand);
}

TEST(QuantizedAdamW, ArgumentErrors) {
  auto ctx = cpu();
  const int64_t n = 300;
  Tensor p = ops::zeros(ctx, {n}, DType::F32), g = ops::zeros(ctx, {n}, DType::F32);
  QuantizedMoment m =
      ops::make_moment(ctx, n, spec_of(MomentEncoding::FP8Expand), MemoryCategory::OptimizerState);
  QuantizedMoment v = ops::make_moment(ctx, n, spec_of(MomentEncoding::FP8), MemoryCategory::OptimizerState);
  const ops::AdamWHyper h = hyper(1);
  EXPECT_NO_THROW(ops::adamw_step_quantized(p, g, m, v, h, {{0, 10}, {10, 20}, {30, n}}));
  auto step = [&](std::vector<ops::DecayRange> r) { ops::adamw_step_quantized(p, g, m, v, h, r); };
  test::expect_error_containing([&] { step({{20, 30}, {10, 15}}); }, "sorted and non-overlapping");
  test::expect_error_containing([&] { step({{0, 20}, {19, 25}}); }, "sorted and non-overlapping");
  test::expect_error_containing([&] { step({{0, n + 1}}); }, "decay range 0");
  test::expect_error_containing([&] { step({{-1, 4}}); }, "decay range 0");
  test::expect_error_containing([&] { step({{5, 4}}); }, "end < begin");
  QuantizedMoment short_v =
      ops::make_moment(ctx, n - 1, spec_of(MomentEncoding::FP8), MemoryCategory::OptimizerState);
  test::expect_error_containing([&] { ops::adamw_step_quantized(p, g, m, short_v, h, {}); },
                                "exp_avg_sq (v) has 299");
  QuantizedMoment wrong = m;
  wrong.spec.fp8 = DType::E5M2;
  test::expect_error_containing([&] { ops::adamw_step_quantized(p, g, wrong, v, h, {}); },
                                "codes have dtype e4m3");
  wrong = m;
  wrong.spec.group_size = 64;
  test::expect_error_containing([&] { ops::adamw_step_quantized(p, g, wrong, v, h, {}); },
                                "scale has 3 elements");
  wrong = m;
  wrong.spec.group_size = 0;
  test::expect_error_containing([&] { ops::adamw_step_quantized(p, g, wrong, v, h, {}); }, "group_size");
  ops::AdamWHyper bad = h;
  bad.step = 0;
  test::expect_error_containing([&] { ops::adamw_step_quantized(p, g, m, v, bad, {}); }, "step 0");
  Tensor g16 = ops::zeros(ctx, {n}, DType::BF16);
  test::expect_error_containing([&] { ops::adamw_step_quantized(p, g16, m, v, h, {}); },
                                "grad has dtype bf16");
  test::expect_error_containing([&] { ops::quantize_moment(ops::zeros(ctx, {n + 1}, DType::F32), m); },
                                "values has 301 elements");
}

}  // namespace
}  // namespace coat
