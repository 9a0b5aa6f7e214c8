// Exactness tests for coat/core/float_formats.h: decoding against the textbook formula, encoding against a
// nearest-value search over each format's value table and, when the CUDA headers are present, bit for bit.
#include "coat/core/float_formats.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <ios>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#ifdef COAT_HAVE_CUDA_HEADERS
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#endif

namespace coat {
namespace {

constexpr float kFloatInf = std::numeric_limits<float>::infinity();
constexpr double kDoubleInf = std::numeric_limits<double>::infinity();

uint32_t bits_of(float x) {
  return std::bit_cast<uint32_t>(x);
}
uint64_t bits_of(double x) {
  return std::bit_cast<uint64_t>(x);
}
float float_from_bits(uint32_t bits) {
  return std::bit_cast<float>(bits);
}
double double_from_bits(uint64_t bits) {
  return std::bit_cast<double>(bits);
}

// ---- An independent model of the narrow formats --------------------------------------------------------

// Field widths and the special-value convention, from which the tests derive every expectation.
struct FormatSpec {
  const char* name;
  int exponent_bits;
  int mantissa_bits;
  bool ieee_specials;  // all-ones exponent means inf/NaN; otherwise (E4M3 "fn") only all-ones code is NaN

  int bias() const { return (1 << (exponent_bits - 1)) - 1; }
  uint32_t sign_bit() const { return 1u << (exponent_bits + mantissa_bits); }
  uint32_t code_count() const { return sign_bit() << 1; }
  uint32_t all_ones_magnitude() const { return sign_bit() - 1; }
  uint32_t inf_code() const { return ((1u << exponent_bits) - 1) << mantissa_bits; }
  uint32_t max_finite_code() const { return ieee_specials ? inf_code() - 1 : all_ones_magnitude() - 1; }
  bool is_nan(uint32_t code) const {
    const uint32_t magnitude = code & all_ones_magnitude();
    return ieee_specials ? magnitude > inf_code() : magnitude == all_ones_magnitude();
  }
};

constexpr FormatSpec kE4M3{"E4M3", 4, 3, false};
constexpr FormatSpec kE5M2{"E5M2", 5, 2, true};
constexpr FormatSpec kF16{"F16", 5, 10, true};
constexpr FormatSpec kBF16{"BF16", 8, 7, true};

// 2^(e - bias) * (1 + m / 2^M), or m * 2^(1 - bias - M) for e == 0, ignoring special codes: the code just
// past the largest finite one thereby yields the value where the format would continue, the overflow limit.
double formula_magnitude(const FormatSpec& format, uint32_t magnitude_code) {
  const int mantissa_bits = format.mantissa_bits;
  const int exponent = static_cast<int>(magnitude_code >> mantissa_bits);
  const double mantissa = magnitude_code & ((1u << mantissa_bits) - 1);
  if (exponent == 0) return std::ldexp(mantissa, 1 - format.bias() - mantissa_bits);
  return std::ldexp(1.0 + std::ldexp(mantissa, -mantissa_bits), exponent - format.bias());
}

// The value a full code (sign included) stands for, specials included.
double formula_decode(const FormatSpec& format, uint32_t code) {
  const double sign = (code & format.sign_bit()) != 0 ? -1.0 : 1.0;
  const uint32_t magnitude = code & format.all_ones_magnitude();
  if (format.is_nan(code)) return std::numeric_limits<double>::quiet_NaN();
  if (format.ieee_specials && magnitude == format.inf_code()) return sign * kDoubleInf;
  return sign * formula_magnitude(format, magnitude);
}

// Rounds by searching the sorted table of the format's non-negative finite values, so shares no rounding
// arithmetic with the code under test. Ties between two neighbours go to the even code (even mantissa).
class NearestValueSearch {
 public:
  explicit NearestValueSearch(const FormatSpec& format) : format_(format) {
    for (uint32_t code = 0; code <= format.max_finite_code() + 1; ++code) {
      values_.push_back(formula_magnitude(format, code));
    }
  }

  // The magnitude code nearest to `magnitude` (non-negative, not NaN); max_finite_code() + 1 means overflow.
  uint32_t round(double magnitude) const {
    const auto above = std::upper_bound(values_.begin(), values_.end(), magnitude);
    if (above == values_.end()) return format_.max_finite_code() + 1;
    const uint32_t upper_code = static_cast<uint32_t>(above - values_.begin());  // >= 1: values_[0] is 0
    const uint32_t lower_code = upper_code - 1;
    const double midpoint = (values_[lower_code] + values_[upper_code]) / 2;  // exact: few significant bits
    if (magnitude < midpoint) return lower_code;
    if (magnitude > midpoint) return upper_code;
    return (lower_code % 2 == 0) ? lower_code : upper_code;
  }

  const FormatSpec& format() const { return format_; }
  const std::vector<double>& values() const { return values_; }

 private:
  FormatSpec format_;
  std::vector<double> values_;
};

// ---- Expected encodings under CUDA's rules, built on the nearest-value search --------------------------

bool is_e4m3(const FormatSpec& format) {
  return format.exponent_bits == 4;
}

// FP8 encode of a non-NaN value: overflow saturates to +/-max, or else gives NaN (E4M3) or inf (E5M2).
uint8_t expected_fp8_non_nan(const NearestValueSearch& search, double x, Fp8Saturation sat) {
  const FormatSpec& format = search.format();
  const uint32_t sign = std::signbit(x) ? 0x80u : 0u;
  uint32_t code = search.round(std::fabs(x));
  if (code > format.max_finite_code()) {
    if (sat == Fp8Saturation::Saturate) {
      code = format.max_finite_code();
    } else {
      code = is_e4m3(format) ? 0x7Fu : format.inf_code();
    }
  }
  return static_cast<uint8_t>(sign | code);
}

// cuda_fp8.hpp turns any float NaN into 0x7FFFFFFF before converting, hence always the positive 0x7F.
uint8_t expected_float_to_fp8(const NearestValueSearch& search, float x, Fp8Saturation sat) {
  if (std::isnan(x)) return 0x7F;
  return expected_fp8_non_nan(search, x, sat);
}

// A double NaN keeps its sign; E4M3 gives 0x7F, E5M2 gives 0x7E | the top two fraction bits.
uint8_t expected_double_to_fp8(const NearestValueSearch& search, double x, Fp8Saturation sat) {
  if (std::isnan(x)) {
    const uint32_t sign = std::signbit(x) ? 0x80u : 0u;
    const uint32_t top_fraction_bits = static_cast<uint32_t>(bits_of(x) >> 50) & 3u;
    return static_cast<uint8_t>(sign | (is_e4m3(search.format()) ? 0x7Fu : 0x7Eu | top_fraction_bits));
  }
  return expected_fp8_non_nan(search, x, sat);
}

// BF16/F16: overflow gives inf, and every NaN the positive 0x7FFF.
uint16_t expected_ieee16(const NearestValueSearch& search, double x) {
  const FormatSpec& format = search.format();
  if (std::isnan(x)) return 0x7FFF;
  const uint32_t sign = std::signbit(x) ? format.sign_bit() : 0u;
  return static_cast<uint16_t>(sign | std::min(search.round(std::fabs(x)), format.inf_code()));
}

// ---- Input sweeps --------------------------------------------------------------------------------------

constexpr uint32_t kRandomSeed = 20240611;

void append_with_negatives(std::vector<float>& inputs) {
  const size_t count = inputs.size();
  for (size_t i = 0; i < count; ++i) inputs.push_back(-inputs[i]);
}
void append_with_negatives(std::vector<double>& inputs) {
  const size_t count = inputs.size();
  for (size_t i = 0; i < count; ++i) inputs.push_back(-inputs[i]);
}

std::vector<float> float_special_values() {
  std::vector<float> values = {0.0f,
                               kFloatInf,
                               std::numeric_limits<float>::max(),
                               std::numeric_limits<float>::min(),
                               std::numeric_limits<float>::denorm_min(),
                               float_from_bits(0x007FFFFFu),  // largest float subnormal
                               float_from_bits(0x00400000u),
                               float_from_bits(0x00012345u),
                               1e30f,
                               1e-30f,
                               2 * kE5M2Max,
                               2 * kE4M3Max};
  append_with_negatives(values);
  // NaNs of both signs, quiet and signalling, with assorted payloads (built from bits: negation is not
  // guaranteed to flip a NaN's sign).
  for (uint32_t nan_bits : {0x7FC00000u, 0x7F800001u, 0x7FA00000u, 0x7FFFFFFFu, 0x7FE00000u, 0x7F812345u}) {
    values.push_back(float_from_bits(nan_bits));
    values.push_back(float_from_bits(nan_bits | 0x80000000u));
  }
  return values;
}

// Every table value and every midpoint between neighbours (the overflow limit included), each with the
// float one ulp below and above, both signs, plus special values.
std::vector<float> float_value_and_midpoint_sweep(const NearestValueSearch& search) {
  std::vector<float> inputs = float_special_values();
  std::vector<float> positives;
  const std::vector<double>& values = search.values();
  for (size_t code = 0; code < values.size(); ++code) {
    std::vector<float> centres = {static_cast<float>(values[code])};
    if (code + 1 < values.size())
      centres.push_back(static_cast<float>((values[code] + values[code + 1]) / 2));
    for (float centre : centres) {
      positives.push_back(centre);
      positives.push_back(std::nextafter(centre, 0.0f));
      positives.push_back(std::nextafter(centre, kFloatInf));
    }
  }
  append_with_negatives(positives);
  inputs.insert(inputs.end(), positives.begin(), positives.end());
  return inputs;
}

// Floats whose bits above the format's rounding position take every value and whose bits below it are
// 0, just under half, exactly half, just over half, or all ones: the rounding cases of every normal binade.
std::vector<float> float_rounding_bit_sweep(const FormatSpec& format) {
  const int dropped_bits = 23 - format.mantissa_bits;
  const uint32_t half = 1u << (dropped_bits - 1);
  const uint32_t low_patterns[] = {0u, half - 1, half, half + 1, (half << 1) - 1};
  std::vector<float> inputs;
  for (uint32_t top = 0; top < (1u << (32 - dropped_bits)); ++top) {
    for (uint32_t low : low_patterns) inputs.push_back(float_from_bits((top << dropped_bits) | low));
  }
  return inputs;
}

// 2^22 random float bit patterns (all classes: NaNs, infinities, subnormals, huge and tiny values).
std::vector<float> random_floats() {
  std::mt19937 generator(kRandomSeed);
  std::vector<float> inputs(1u << 22);
  for (float& x : inputs) x = float_from_bits(static_cast<uint32_t>(generator()));
  return inputs;
}

std::vector<float> all_float_inputs(const NearestValueSearch& search) {
  std::vector<float> inputs = float_value_and_midpoint_sweep(search);
  const std::vector<float> bit_sweep = float_rounding_bit_sweep(search.format());
  const std::vector<float> random = random_floats();
  inputs.insert(inputs.end(), bit_sweep.begin(), bit_sweep.end());
  inputs.insert(inputs.end(), random.begin(), random.end());
  return inputs;
}

// Table values and midpoints with the doubles one ulp either side (which trip up double rounding through
// float), double specials and NaNs, every float input, and random doubles both raw and in the format's range.
std::vector<double> all_double_inputs(const NearestValueSearch& search) {
  std::vector<double> inputs;
  const std::vector<double>& values = search.values();
  for (size_t code = 0; code < values.size(); ++code) {
    std::vector<double> centres = {values[code]};
    if (code + 1 < values.size()) centres.push_back((values[code] + values[code + 1]) / 2);
    for (double centre : centres) {
      inputs.push_back(centre);
      inputs.push_back(std::nextafter(centre, 0.0));
      inputs.push_back(std::nextafter(centre, kDoubleInf));
    }
  }
  for (double special : {kDoubleInf, std::numeric_limits<double>::max(), std::numeric_limits<double>::min(),
                         std::numeric_limits<double>::denorm_min(), double_from_bits(0x000FFFFFFFFFFFFFull),
                         static_cast<double>(std::numeric_limits<float>::max()) * 1.5, 1e300, 1e-300}) {
    inputs.push_back(special);
  }
  append_with_negatives(inputs);
  for (uint64_t nan_bits :
       {0x7FF8000000000000ull, 0x7FF0000000000001ull, 0x7FF4000000000000ull, 0x7FFC000000000000ull,
        0x7FF2000000000000ull, 0x7FFFFFFFFFFFFFFFull, 0x7FFA5A5A5A5A5A5Aull}) {
    inputs.push_back(double_from_bits(nan_bits));
    inputs.push_back(double_from_bits(nan_bits | 0x8000000000000000ull));
  }
  for (float x : all_float_inputs(search)) inputs.push_back(x);

  std::mt19937_64 generator(kRandomSeed);
  for (int i = 0; i < (1 << 20); ++i) inputs.push_back(double_from_bits(generator()));
  // Exponents from well below the smallest subnormal to past the overflow limit, random 52-bit fractions.
  const int lowest_exponent = 1 - search.format().bias() - search.format().mantissa_bits - 3;
  const int highest_exponent = (1 << search.format().exponent_bits) - search.format().bias() + 1;
  std::uniform_int_distribution<int> exponent(lowest_exponent, highest_exponent);
  for (int i = 0; i < (1 << 20); ++i) {
    const uint64_t fraction = generator() >> 12;
    const uint64_t sign = generator() & 0x8000000000000000ull;
    const uint64_t biased_exponent = static_cast<uint64_t>(exponent(generator) + 1023);
    inputs.push_back(double_from_bits(sign | (biased_exponent << 52) | fraction));
  }
  return inputs;
}

// ---- Comparison helpers --------------------------------------------------------------------------------

std::string hex(uint64_t value) {
  std::ostringstream out;
  out << "0x" << std::hex << value;
  return out.str();
}

// Compares two encoders over all inputs, reporting the first few differing inputs by their bits.
template <typename Input, typename Actual, typename Expected>
void expect_same_codes(const std::string& what, const std::vector<Input>& inputs, Actual actual,
                       Expected expected) {
  size_t mismatches = 0;
  for (Input x : inputs) {
    const uint32_t got = actual(x);
    const uint32_t want = expected(x);
    if (got != want && ++mismatches <= 8) {
      ADD_FAILURE() << what << ": input " << x << " (bits " << hex(bits_of(x)) << ") gives " << hex(got)
                    << ", expected " << hex(want);
    }
  }
  EXPECT_EQ(mismatches, 0u) << what << ", over " << inputs.size() << " inputs";
}

constexpr Fp8Saturation kBothSaturations[] = {Fp8Saturation::Saturate, Fp8Saturation::NoSaturate};

std::string saturation_name(Fp8Saturation sat) {
  return sat == Fp8Saturation::Saturate ? "Saturate" : "NoSaturate";
}

// ---- Decode --------------------------------------------------------------------------------------------

// Checks a decoder on every code: finite values and infinities exactly (signed zeros included), and NaNs
// as `nan_bits(code)`.
template <typename Decode, typename NanBits>
void expect_decode_matches_formula(const FormatSpec& format, Decode decode, NanBits nan_bits) {
  for (uint32_t code = 0; code < format.code_count(); ++code) {
    const float decoded = decode(code);
    const double expected = formula_decode(format, code);
    if (std::isnan(expected)) {
      EXPECT_EQ(bits_of(decoded), nan_bits(code)) << format.name << " code " << hex(code);
    } else {
      EXPECT_EQ(static_cast<double>(decoded), expected) << format.name << " code " << hex(code);
      EXPECT_EQ(std::signbit(decoded), std::signbit(expected)) << format.name << " code " << hex(code);
    }
  }
}

// Every CUDA decode to float except BF16's passes through __half2float, which makes all NaNs 0x7FFFFFFF.
uint32_t canonical_nan_bits(uint32_t /*code*/) {
  return 0x7FFFFFFFu;
}

TEST(FloatFormatsDecode, E4M3EveryCodeMatchesFormula) {
  expect_decode_matches_formula(
      kE4M3, [](uint32_t code) { return e4m3_to_float(static_cast<uint8_t>(code)); }, canonical_nan_bits);
  EXPECT_EQ(e4m3_to_float(0x7E), kE4M3Max);
  EXPECT_EQ(e4m3_to_float(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
}

TEST(FloatFormatsDecode, E5M2EveryCodeMatchesFormula) {
  expect_decode_matches_formula(
      kE5M2, [](uint32_t code) { return e5m2_to_float(static_cast<uint8_t>(code)); }, canonical_nan_bits);
  EXPECT_EQ(e5m2_to_float(0x7B), kE5M2Max);
  EXPECT_EQ(e5m2_to_float(0x01), std::ldexp(1.0f, -16));
}

TEST(FloatFormatsDecode, F16EveryCodeMatchesFormula) {
  expect_decode_matches_formula(
      kF16, [](uint32_t code) { return f16_to_float(static_cast<uint16_t>(code)); }, canonical_nan_bits);
}

TEST(FloatFormatsDecode, BF16EveryCodeMatchesFormula) {
  // BF16 widens by a shift, so a NaN keeps its sign and payload.
  expect_decode_matches_formula(
      kBF16, [](uint32_t code) { return bf16_to_float(static_cast<uint16_t>(code)); },
      [](uint32_t code) { return code << 16; });
}

// ---- Round trips and monotonicity ----------------------------------------------------------------------

TEST(FloatFormatsRoundTrip, EveryFiniteFp8CodeSurvivesFloatAndDouble) {
  for (uint32_t code = 0; code < 256; ++code) {
    const uint8_t fp8 = static_cast<uint8_t>(code);
    for (Fp8Saturation sat : kBothSaturations) {
      if (!kE4M3.is_nan(code)) {
        EXPECT_EQ(float_to_e4m3(e4m3_to_float(fp8), sat), fp8) << hex(code) << " " << saturation_name(sat);
        EXPECT_EQ(double_to_e4m3(e4m3_to_float(fp8), sat), fp8) << hex(code) << " " << saturation_name(sat);
      }
      // E5M2 infinities survive only without saturation.
      const bool e5m2_inf = (code & 0x7F) == kE5M2.inf_code();
      if (!kE5M2.is_nan(code) && !(e5m2_inf && sat == Fp8Saturation::Saturate)) {
        EXPECT_EQ(float_to_e5m2(e5m2_to_float(fp8), sat), fp8) << hex(code) << " " << saturation_name(sat);
        EXPECT_EQ(double_to_e5m2(e5m2_to_float(fp8), sat), fp8) << hex(code) << " " << saturation_name(sat);
      }
    }
  }
}

TEST(FloatFormatsRoundTrip, EveryNonNanF16AndBF16CodeSurvivesFloatAndDouble) {
  for (uint32_t code = 0; code < 0x10000; ++code) {
    const uint16_t bits = static_cast<uint16_t>(code);
    const uint16_t f16_expected = kF16.is_nan(code) ? 0x7FFF : bits;
    EXPECT_EQ(float_to_f16(f16_to_float(bits)), f16_expected) << hex(code);
    EXPECT_EQ(double_to_f16(f16_to_float(bits)), f16_expected) << hex(code);
    const uint16_t bf16_expected = kBF16.is_nan(code) ? 0x7FFF : bits;
    EXPECT_EQ(float_to_bf16(bf16_to_float(bits)), bf16_expected) << hex(code);
    EXPECT_EQ(double_to_bf16(bf16_to_float(bits)), bf16_expected) << hex(code);
  }
}

// Positive codes, read as integers, order their values; negative codes mirror them.
template <typename Decode>
void expect_decode_increasing(const FormatSpec& format, Decode decode) {
  const uint32_t last = format.ieee_specials ? format.inf_code() : format.max_finite_code();
  for (uint32_t code = 0; code < last; ++code) {
    EXPECT_LT(decode(code), decode(code + 1)) << format.name << " code " << hex(code);
    EXPECT_EQ(decode(code | format.sign_bit()), -decode(code)) << format.name << " code " << hex(code);
  }
}

TEST(FloatFormatsMonotonic, DecodeIncreasesWithCode) {
  expect_decode_increasing(kE4M3, [](uint32_t c) { return e4m3_to_float(static_cast<uint8_t>(c)); });
  expect_decode_increasing(kE5M2, [](uint32_t c) { return e5m2_to_float(static_cast<uint8_t>(c)); });
  expect_decode_increasing(kF16, [](uint32_t c) { return f16_to_float(static_cast<uint16_t>(c)); });
  expect_decode_increasing(kBF16, [](uint32_t c) { return bf16_to_float(static_cast<uint16_t>(c)); });
}

// Over increasing non-NaN floats, the decoded encoding never decreases.
template <typename RoundTrip>
void expect_round_trip_non_decreasing(const NearestValueSearch& search, RoundTrip round_trip) {
  std::vector<float> inputs = all_float_inputs(search);
  std::erase_if(inputs, [](float x) { return std::isnan(x); });
  std::sort(inputs.begin(), inputs.end());
  size_t decreases = 0;
  for (size_t i = 1; i < inputs.size(); ++i) {
    if (round_trip(inputs[i]) < round_trip(inputs[i - 1]) && ++decreases <= 8) {
      ADD_FAILURE() << search.format().name << ": " << inputs[i - 1] << " -> " << round_trip(inputs[i - 1])
                    << " but " << inputs[i] << " -> " << round_trip(inputs[i]);
    }
  }
  EXPECT_EQ(decreases, 0u) << search.format().name;
}

TEST(FloatFormatsMonotonic, EncodeNeverDecreases) {
  expect_round_trip_non_decreasing(NearestValueSearch(kE4M3),
                                   [](float x) { return e4m3_to_float(float_to_e4m3(x)); });
  expect_round_trip_non_decreasing(NearestValueSearch(kE5M2),
                                   [](float x) { return e5m2_to_float(float_to_e5m2(x)); });
  expect_round_trip_non_decreasing(NearestValueSearch(kF16),
                                   [](float x) { return f16_to_float(float_to_f16(x)); });
  expect_round_trip_non_decreasing(NearestValueSearch(kBF16),
                                   [](float x) { return bf16_to_float(float_to_bf16(x)); });
}

// ---- Encode against the nearest-value search -----------------------------------------------------------

TEST(FloatFormatsEncode, E4M3MatchesNearestValueSearch) {
  const NearestValueSearch search(kE4M3);
  const std::vector<float> floats = all_float_inputs(search);
  const std::vector<double> doubles = all_double_inputs(search);
  for (Fp8Saturation sat : kBothSaturations) {
    expect_same_codes(
        "float_to_e4m3 " + saturation_name(sat), floats, [&](float x) { return float_to_e4m3(x, sat); },
        [&](float x) { return expected_float_to_fp8(search, x, sat); });
    expect_same_codes(
        "double_to_e4m3 " + saturation_name(sat), doubles, [&](double x) { return double_to_e4m3(x, sat); },
        [&](double x) { return expected_double_to_fp8(search, x, sat); });
  }
}

TEST(FloatFormatsEncode, E5M2MatchesNearestValueSearch) {
  const NearestValueSearch search(kE5M2);
  const std::vector<float> floats = all_float_inputs(search);
  const std::vector<double> doubles = all_double_inputs(search);
  for (Fp8Saturation sat : kBothSaturations) {
    expect_same_codes(
        "float_to_e5m2 " + saturation_name(sat), floats, [&](float x) { return float_to_e5m2(x, sat); },
        [&](float x) { return expected_float_to_fp8(search, x, sat); });
    expect_same_codes(
        "double_to_e5m2 " + saturation_name(sat), doubles, [&](double x) { return double_to_e5m2(x, sat); },
        [&](double x) { return expected_double_to_fp8(search, x, sat); });
  }
}

TEST(FloatFormatsEncode, F16MatchesNearestValueSearch) {
  const NearestValueSearch search(kF16);
  expect_same_codes(
      "float_to_f16", all_float_inputs(search), [](float x) { return float_to_f16(x); },
      [&](float x) { return expected_ieee16(search, x); });
  expect_same_codes(
      "double_to_f16", all_double_inputs(search), [](double x) { return double_to_f16(x); },
      [&](double x) { return expected_ieee16(search, x); });
}

TEST(FloatFormatsEncode, BF16MatchesNearestValueSearch) {
  const NearestValueSearch search(kBF16);
  expect_same_codes(
      "float_to_bf16", all_float_inputs(search), [](float x) { return float_to_bf16(x); },
      [&](float x) { return expected_ieee16(search, x); });
  expect_same_codes(
      "double_to_bf16", all_double_inputs(search), [](double x) { return double_to_bf16(x); },
      [&](double x) { return expected_ieee16(search, x); });
}

// The rules in words, as readable spot checks.
TEST(FloatFormatsEncode, DocumentedEdgeCases) {
  constexpr auto kNoSat = Fp8Saturation::NoSaturate;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float negative_nan = float_from_bits(0xFFC00000u);

  // E4M3: 464 is the tie between 448 (even) and the would-be 480, so it stays 448; beyond, overflow.
  EXPECT_EQ(float_to_e4m3(464.0f, kNoSat), 0x7E);
  EXPECT_EQ(float_to_e4m3(std::nextafter(464.0f, kFloatInf)), 0x7E);
  EXPECT_EQ(float_to_e4m3(std::nextafter(464.0f, kFloatInf), kNoSat), 0x7F);
  EXPECT_EQ(float_to_e4m3(-kFloatInf), 0xFE);
  EXPECT_EQ(float_to_e4m3(-kFloatInf, kNoSat), 0xFF);  // no infinity: -NaN
  // E5M2: 61440 is the tie between 57344 (odd mantissa) and 65536, so it overflows.
  EXPECT_EQ(float_to_e5m2(std::nextafter(61440.0f, 0.0f), kNoSat), 0x7B);
  EXPECT_EQ(float_to_e5m2(61440.0f), 0x7B);
  EXPECT_EQ(float_to_e5m2(61440.0f, kNoSat), 0x7C);
  EXPECT_EQ(float_to_e5m2(-kFloatInf, kNoSat), 0xFC);
  EXPECT_EQ(float_to_e5m2(-kFloatInf), 0xFB);

  // Underflow keeps the sign; half the smallest subnormal is a tie that goes to zero.
  EXPECT_EQ(float_to_e4m3(-1e-20f), 0x80);
  EXPECT_EQ(float_to_e4m3(std::ldexp(1.0f, -10)), 0x00);
  EXPECT_EQ(float_to_e4m3(std::nextafter(std::ldexp(1.0f, -10), 1.0f)), 0x01);
  EXPECT_EQ(float_to_e5m2(std::ldexp(3.0f, -17)), 0x02);  // 1.5 smallest subnormals: tie to even
  EXPECT_EQ(float_to_e5m2(std::ldexp(5.0f, -17)), 0x02);  // 2.5 smallest subnormals: tie to even

  // Float NaNs always give the positive 0x7F; double NaNs keep their sign.
  for (Fp8Saturation sat : kBothSaturations) {
    EXPECT_EQ(float_to_e4m3(negative_nan, sat), 0x7F);
    EXPECT_EQ(float_to_e5m2(negative_nan, sat), 0x7F);
    EXPECT_EQ(float_to_e5m2(nan, sat), 0x7F);
    EXPECT_EQ(double_to_e4m3(double_from_bits(0xFFF8000000000000ull), sat), 0xFF);
    EXPECT_EQ(double_to_e5m2(double_from_bits(0xFFF8000000000000ull), sat), 0xFE);
    EXPECT_EQ(double_to_e5m2(double_from_bits(0x7FFC000000000000ull), sat), 0x7F);
  }
  // And every NaN decodes to the positive 0x7FFFFFFF.
  EXPECT_EQ(bits_of(e4m3_to_float(0xFF)), 0x7FFFFFFFu);
  EXPECT_EQ(bits_of(e5m2_to_float(0xFD)), 0x7FFFFFFFu);
  EXPECT_EQ(bits_of(f16_to_float(0xFE00)), 0x7FFFFFFFu);
  EXPECT_EQ(bits_of(bf16_to_float(0xFFC1)), 0xFFC10000u);

  // BF16/F16: NaN -> 0x7FFF whatever its sign; ties to even; overflow to inf.
  EXPECT_EQ(float_to_bf16(negative_nan), 0x7FFF);
  EXPECT_EQ(float_to_f16(negative_nan), 0x7FFF);
  EXPECT_EQ(float_to_bf16(float_from_bits(0x3F808000u)), 0x3F80);
  EXPECT_EQ(float_to_bf16(float_from_bits(0x3F818000u)), 0x3F82);
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::max()), 0x7F80);
  EXPECT_EQ(float_to_f16(65504.0f), 0x7BFF);
  EXPECT_EQ(float_to_f16(std::nextafter(65520.0f, 0.0f)), 0x7BFF);
  EXPECT_EQ(float_to_f16(-65520.0f), 0xFC00);
  // A double just above a BF16 midpoint rounds up, though rounding it to float first would land on the tie.
  const double above_midpoint = 1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -40);
  EXPECT_EQ(double_to_bf16(above_midpoint), 0x3F81);
  EXPECT_EQ(float_to_bf16(static_cast<float>(above_midpoint)), 0x3F80);
}

// ---- Bit-for-bit against the CUDA headers' host paths --------------------------------------------------

#ifdef COAT_HAVE_CUDA_HEADERS

__nv_saturation_t cuda_saturation(Fp8Saturation sat) {
  return sat == Fp8Saturation::Saturate ? __NV_SATFINITE : __NV_NOSAT;
}

float cuda_fp8_to_float(uint32_t code, __nv_fp8_interpretation_t kind) {
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(code), kind)));
}

uint16_t cuda_raw(__half value) {
  return static_cast<__half_raw>(value).x;
}
uint16_t cuda_raw(__nv_bfloat16 value) {
  return static_cast<__nv_bfloat16_raw>(value).x;
}

TEST(FloatFormatsCudaReference, DecodeMatchesHeaderForEveryCode) {
  for (uint32_t code = 0; code < 256; ++code) {
    const uint8_t fp8 = static_cast<uint8_t>(code);
    EXPECT_EQ(bits_of(e4m3_to_float(fp8)), bits_of(cuda_fp8_to_float(code, __NV_E4M3))) << hex(code);
    EXPECT_EQ(bits_of(e5m2_to_float(fp8)), bits_of(cuda_fp8_to_float(code, __NV_E5M2))) << hex(code);
  }
  for (uint32_t code = 0; code < 0x10000; ++code) {
    __half_raw half_raw;
    half_raw.x = static_cast<uint16_t>(code);
    __nv_bfloat16_raw bf16_raw;
    bf16_raw.x = static_cast<uint16_t>(code);
    EXPECT_EQ(bits_of(f16_to_float(half_raw.x)), bits_of(__half2float(__half(half_raw)))) << hex(code);
    EXPECT_EQ(bits_of(bf16_to_float(bf16_raw.x)), bits_of(__bfloat162float(__nv_bfloat16(bf16_raw))))
        << hex(code);
  }
}

void expect_fp8_encode_matches_header(const FormatSpec& format, __nv_fp8_interpretation_t kind,
                                      uint8_t (*float_encode)(float, Fp8Saturation),
                                      uint8_t (*double_encode)(double, Fp8Saturation)) {
  const NearestValueSearch search(format);
  const std::vector<float> floats = all_float_inputs(search);
  const std::vector<double> doubles = all_double_inputs(search);
  for (Fp8Saturation sat : kBothSaturations) {
    const std::string suffix = std::string(" ") + format.name + " " + saturation_name(sat);
    expect_same_codes(
        "float vs __nv_cvt_float_to_fp8" + suffix, floats, [&](float x) { return float_encode(x, sat); },
        [&](float x) { return __nv_cvt_float_to_fp8(x, cuda_saturation(sat), kind); });
    expect_same_codes(
        "double vs __nv_cvt_double_to_fp8" + suffix, doubles, [&](double x) { return double_encode(x, sat); },
        [&](double x) { return __nv_cvt_double_to_fp8(x, cuda_saturation(sat), kind); });
  }
}

TEST(FloatFormatsCudaReference, E4M3EncodeMatchesHeader) {
  expect_fp8_encode_matches_header(kE4M3, __NV_E4M3, &float_to_e4m3, &double_to_e4m3);
}

TEST(FloatFormatsCudaReference, E5M2EncodeMatchesHeader) {
  expect_fp8_encode_matches_header(kE5M2, __NV_E5M2, &float_to_e5m2, &double_to_e5m2);
}

TEST(FloatFormatsCudaReference, F16EncodeMatchesHeader) {
  const NearestValueSearch search(kF16);
  expect_same_codes(
      "float_to_f16 vs __float2half", all_float_inputs(search), [](float x) { return float_to_f16(x); },
      [](float x) { return cuda_raw(__float2half(x)); });
  expect_same_codes(
      "double_to_f16 vs __double2half", all_double_inputs(search), [](double x) { return double_to_f16(x); },
      [](double x) { return cuda_raw(__double2half(x)); });
}

TEST(FloatFormatsCudaReference, BF16EncodeMatchesHeader) {
  const NearestValueSearch search(kBF16);
  expect_same_codes(
      "float_to_bf16 vs __float2bfloat16", all_float_inputs(search), [](float x) { return float_to_bf16(x); },
      [](float x) { return cuda_raw(__float2bfloat16(x)); });
  expect_same_codes(
      "double_to_bf16 vs __double2bfloat16", all_double_inputs(search),
      [](double x) { return double_to_bf16(x); }, [](double x) { return cuda_raw(__double2bfloat16(x)); });
}

#else

TEST(FloatFormatsCudaReference, Skipped) {
  GTEST_SKIP() << "CUDA headers not present";
}

#endif  // COAT_HAVE_CUDA_HEADERS

}  // namespace
}  // namespace coat
