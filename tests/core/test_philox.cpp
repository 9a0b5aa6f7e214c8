// Philox4x32-10 known answers, counter/element independence, accuracy of the fmaf-only log and cos, and
// the statistics of the uniform and normal transforms (host side of the bit-identical CPU/CUDA generator).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <limits>
#include <numbers>

#include "coat/core/philox.h"

namespace coat {
namespace {

struct PhiloxKnownAnswer {
  uint32_t counter[4];
  uint32_t key[2];
  uint32_t expected[4];
};

// The philox4x32 10-round lines of Random123's kat_vectors file.
constexpr PhiloxKnownAnswer kPhiloxKnownAnswers[] = {
    {{0x00000000, 0x00000000, 0x00000000, 0x00000000},
     {0x00000000, 0x00000000},
     {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
    {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
     {0xffffffff, 0xffffffff},
     {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
    {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
     {0xa4093822, 0x299f31d0},
     {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
};

bool same_words(const Philox4x32Result& a, const Philox4x32Result& b) {
  return std::equal(std::begin(a.v), std::end(a.v), std::begin(b.v));
}

TEST(Philox, MatchesRandom123KnownAnswers) {
  for (const PhiloxKnownAnswer& kat : kPhiloxKnownAnswers) {
    const Philox4x32Result result = philox4x32_10(kat.counter[0], kat.counter[1], kat.counter[2],
                                                  kat.counter[3], kat.key[0], kat.key[1]);
    for (int word = 0; word < 4; ++word) {
      EXPECT_EQ(result.v[word], kat.expected[word]) << "counter word0 " << std::hex << kat.counter[0]
                                                    << ", output word " << word;
    }
  }
}

TEST(Philox, ElementMapsToCounterAndKeyAsDocumented) {
  const uint64_t seed = 0x0123456789abcdefull;
  const uint64_t offset = 0xfffffffffull;  // crosses into the high counter word once index is added
  const uint64_t index = 17;
  const uint64_t counter = offset + index;
  EXPECT_TRUE(same_words(philox_for_element(seed, offset, index),
                         philox4x32_10(static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32),
                                       0, 0, 0x89abcdefu, 0x01234567u)));
}

TEST(Philox, ElementDependsOnlyOnOffsetPlusIndex) {
  const uint64_t seed = 20240611;
  for (uint64_t offset : {uint64_t{0}, uint64_t{12345}, uint64_t{0xffffffffull}, ~uint64_t{0} - 100}) {
    for (uint64_t index = 0; index < 200; ++index) {
      EXPECT_TRUE(same_words(philox_for_element(seed, offset, index),
                             philox_for_element(seed, offset + index, 0)));
    }
  }
  // A fill split into two pieces (the second piece's offset advanced by the first piece's size) equals the
  // fill done in one go, for the float transforms as well.
  const uint64_t first_piece = 37;
  for (uint64_t index = first_piece; index < 100; ++index) {
    EXPECT_EQ(philox_normal(seed, 5, index, 0.0f, 1.0f),
              philox_normal(seed, 5 + first_piece, index - first_piece, 0.0f, 1.0f));
    EXPECT_EQ(philox_uniform(seed, 5, index, -1.0f, 1.0f),
              philox_uniform(seed, 5 + first_piece, index - first_piece, -1.0f, 1.0f));
  }
}

TEST(Philox, DifferentSeedsGiveDifferentStreams) {
  // Seeds differing in the low word, the high word, or by one bit must not share words at the same counter.
  const uint64_t seeds[] = {0, 1, 2, uint64_t{1} << 32, 0xdeadbeefcafef00dull, 0xdeadbeefcafef00cull};
  constexpr int kElements = 64;
  for (size_t a = 0; a < std::size(seeds); ++a) {
    for (size_t b = a + 1; b < std::size(seeds); ++b) {
      int equal_words = 0;
      for (int index = 0; index < kElements; ++index) {
        const Philox4x32Result first = philox_for_element(seeds[a], 0, index);
        const Philox4x32Result second = philox_for_element(seeds[b], 0, index);
        for (int word = 0; word < 4; ++word) equal_words += first.v[word] == second.v[word];
      }
      // A chance collision of a 32-bit word has probability 2^-32 each; 256 comparisons should find none.
      EXPECT_EQ(equal_words, 0) << "seeds " << seeds[a] << " and " << seeds[b];
      EXPECT_NE(philox_normal(seeds[a], 0, 0, 0.0f, 1.0f), philox_normal(seeds[b], 0, 0, 0.0f, 1.0f));
    }
  }
}

TEST(Philox, UniformFromBitsCoversHalfOpenUnitInterval) {
  EXPECT_EQ(uniform_from_bits(0u), 0.0f);
  EXPECT_EQ(uniform_from_bits(0xffffffffu), 1.0f - 0x1p-24f);
  EXPECT_EQ(uniform_from_bits(0x80000000u), 0.5f);
  // The low 8 bits are dropped: a float holds only 24.
  EXPECT_EQ(uniform_from_bits(0x800000ffu), 0.5f);
}

TEST(Philox, UniformRangeStaysHalfOpen) {
  // lo + (hi - lo) * u rounds to hi for u close to 1 with these bounds; the result must stay below hi.
  for (uint64_t index = 0; index < 10000; ++index) {
    const float value = philox_uniform(7, 0, index, 1.0f, 1.0000001f);
    EXPECT_GE(value, 1.0f);
    EXPECT_LT(value, 1.0000001f);
  }
  const float lo = -3.0f;
  const float hi = 5.0f;
  for (uint64_t index = 0; index < 1000; ++index) {
    const float u = uniform_from_bits(philox_for_element(9, 3, index).v[0]);
    EXPECT_EQ(philox_uniform(9, 3, index, lo, hi), std::fma(hi - lo, u, lo));
  }
}

// Relative error of a float result against a double reference (references are never 0 on these grids).
double relative_error(float value, double reference) {
  return std::abs(static_cast<double>(value) - reference) / std::abs(reference);
}

// The bound promised in philox.h's comments; the measured maxima are 7.7e-8 (log) and 8.6e-8 (cos).
constexpr double kMaxRelativeError = 2e-7;

TEST(DeterministicMath, LogIsAccurateOnEveryBoxMullerInput) {
  // normal_from_bits only ever takes the log of i * 2^-24, i = 1 .. 2^24: check all of them (i = 2^24 is
  // exactly 1 and must give exactly 0).
  double worst = 0.0;
  for (uint32_t i = 1; i < (1u << 24); ++i) {
    const float x = static_cast<float>(i) * 0x1p-24f;
    worst = std::max(worst, relative_error(deterministic_log(x), std::log(static_cast<double>(x))));
  }
  EXPECT_EQ(deterministic_log(1.0f), 0.0f);
  EXPECT_LE(worst, kMaxRelativeError);
  std::printf("deterministic_log max relative error on (0, 1): %.3g\n", worst);
}

TEST(DeterministicMath, LogIsAccurateAcrossAllPositiveFloats) {
  // Step through the bit patterns of all positive finite floats (subnormals included), skipping x == 1.
  double worst = 0.0;
  for (uint32_t bits = 1; bits < 0x7f800000u; bits += 997) {
    const float x = coat::bits_to_float(bits);
    if (x == 1.0f) continue;
    worst = std::max(worst, relative_error(deterministic_log(x), std::log(static_cast<double>(x))));
  }
  EXPECT_LE(worst, kMaxRelativeError);
  std::printf("deterministic_log max relative error over all positive floats: %.3g\n", worst);

  constexpr float kInfinity = std::numeric_limits<float>::infinity();
  EXPECT_EQ(deterministic_log(0.0f), -kInfinity);
  EXPECT_EQ(deterministic_log(-0.0f), -kInfinity);
  EXPECT_TRUE(std::isnan(deterministic_log(-1.0f)));
  EXPECT_TRUE(std::isnan(deterministic_log(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_EQ(deterministic_log(kInfinity), kInfinity);
}

TEST(DeterministicMath, CosIsAccurateOnEveryUniformValue) {
  // uniform_from_bits yields exactly the 2^24 values i * 2^-24; check every one. The exact quadrant
  // reduction keeps the relative error small even next to the zeros at u = 1/4 and 3/4, so no absolute
  // fallback is needed (the double reference is good to ~1e-8 relative there, cos being >= 9e-8).
  double worst = 0.0;
  for (uint32_t i = 0; i < (1u << 24); ++i) {
    const float u = static_cast<float>(i) * 0x1p-24f;
    if (i == (1u << 22) || i == 3 * (1u << 22)) continue;  // exact zeros, checked below
    const double reference = std::cos(2.0 * std::numbers::pi * static_cast<double>(u));
    worst = std::max(worst, relative_error(deterministic_cos_2pi(u), reference));
  }
  EXPECT_LE(worst, kMaxRelativeError);
  std::printf("deterministic_cos_2pi max relative error on [0, 1): %.3g\n", worst);

  EXPECT_EQ(deterministic_cos_2pi(0.0f), 1.0f);
  EXPECT_EQ(deterministic_cos_2pi(0.5f), -1.0f);
  EXPECT_EQ(std::abs(deterministic_cos_2pi(0.25f)), 0.0f);
  EXPECT_EQ(std::abs(deterministic_cos_2pi(0.75f)), 0.0f);
}

TEST(DeterministicMath, NormalFromBitsExtremes) {
  // bits_u1 = 0 gives u1 = 2^-24, the largest radius sqrt(2 * 24 ln 2); u1 = 1 gives exactly 0.
  const double largest = std::sqrt(48.0 * std::numbers::ln2);
  EXPECT_NEAR(normal_from_bits(0u, 0u), largest, 1e-5);
  EXPECT_NEAR(normal_from_bits(0u, 0x80000000u), -largest, 1e-5);
  EXPECT_EQ(normal_from_bits(0xffffffffu, 0x12345678u), 0.0f);
}

TEST(PhiloxStatistics, UniformMoments) {
  constexpr int kSamples = 1'000'000;
  double sum = 0.0;
  double sum_squares = 0.0;
  int outside = 0;
  for (int i = 0; i < kSamples; ++i) {
    const double u = philox_uniform(42, 1000, i, 0.0f, 1.0f);
    outside += !(u >= 0.0 && u < 1.0);
    sum += u;
    sum_squares += u * u;
  }
  const double mean = sum / kSamples;
  const double variance = sum_squares / kSamples - mean * mean;
  EXPECT_EQ(outside, 0);
  // Standard errors at n = 1e6: mean sqrt(1/12 / n) = 2.9e-4, so 0.002 is ~7 SE; variance
  // sqrt((1/80 - 1/144) / n) = 7.5e-5, so 0.002 is ~27 SE (a loose check that still catches a broken map).
  EXPECT_NEAR(mean, 0.5, 0.002);
  EXPECT_NEAR(variance, 1.0 / 12.0, 0.002);
}

TEST(PhiloxStatistics, NormalMoments) {
  constexpr int kSamples = 1'000'000;
  double sum = 0.0;
  double sum_squares = 0.0;
  int within_one_sigma = 0;
  int not_finite = 0;
  for (int i = 0; i < kSamples; ++i) {
    const double z = philox_normal(7, 0, i, 0.0f, 1.0f);
    not_finite += !std::isfinite(z);
    within_one_sigma += std::abs(z) < 1.0;
    sum += z;
    sum_squares += z * z;
  }
  const double mean = sum / kSamples;
  const double stddev = std::sqrt(sum_squares / kSamples - mean * mean);
  const double fraction_within = static_cast<double>(within_one_sigma) / kSamples;
  EXPECT_EQ(not_finite, 0);
  // Standard errors at n = 1e6: mean 1/sqrt(n) = 1e-3 (0.005 is 5 SE); std 1/sqrt(2n) = 7.1e-4 (0.005 is
  // 7 SE); P(|z| < 1) = 0.6827 with sqrt(p (1 - p) / n) = 4.7e-4 (0.003 is 6.4 SE).
  EXPECT_NEAR(mean, 0.0, 0.005);
  EXPECT_NEAR(stddev, 1.0, 0.005);
  EXPECT_NEAR(fraction_within, 0.682689, 0.003);

  // mean and stddev are applied by one fmaf on the standard normal of the same element.
  for (uint64_t index = 0; index < 1000; ++index) {
    const Philox4x32Result words = philox_for_element(7, 0, index);
    EXPECT_EQ(philox_normal(7, 0, index, 3.0f, 0.02f),
              std::fma(0.02f, normal_from_bits(words.v[0], words.v[1]), 3.0f));
  }
}

}  // namespace
}  // namespace coat
