// ops::quantize_1x128 / quantize_128x128 / dequantize on the CPU backend (the reference of the 128-block FP8
// quantizers): codes and scales of hand-checked blocks, the cuBLASLt scale layouts with their padding,
// all-zero blocks, NaN / inf confined to their block, the dequantization error bound on random inputs,
// bf16 / f16 inputs, argument errors; quantize_1x128_transposed against quantising a materialised transpose.
//
// Tolerances: hand-checked values are exact. Dequantization of a random x: for a value whose scaled magnitude
// |x * scale| is in the format's normal range the code is x * scale rounded to 3 (E4M3) or 2 (E5M2) mantissa
// bits, an error of at most half an ulp: 2^-4 (E4M3) or 2^-3 (E5M2) of |x|; in the subnormal range the error
// is at most half the subnormal step (2^-10 for E4M3, 2^-17 for E5M2) in scaled units, i.e. that times
// scale_inv. The float roundings of x * scale, of 1 / scale and of code * scale_inv add a few 2^-24 relative,
// covered by a 2^-20 relative slack.
#include <gtest/gtest.h>

#include "expect_error.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "coat/backend/cpu/quantize_block.h"
#include "coat/core/float_formats.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/quantize_block.h"
#include "coat/ops/runtime.h"

namespace coat {
namespace {

constexpr uint32_t kCanonicalNan = 0x7FFFFFFFu;

uint32_t bits_of(float v) {
  uint32_t b = 0;
  std::memcpy(&b, &v, sizeof(b));
  return b;
}

double decode(const Tensor& codes, int64_t i) {
  const uint8_t c = codes.data<uint8_t>()[i];
  return codes.dtype() == DType::E4M3 ? static_cast<double>(e4m3_to_float(c)) : static_cast<double>(e5m2_to_float(c));
}

int64_t round_up4(int64_t v) {
  return (v + 3) / 4 * 4;
}

// The layouts, spelled out independently of block_scale_layout.h (which the library uses):
// 1x128 of x [M,K]: [K/128][round_up(M,4)], row m of group kb at kb * round_up(M,4) + m.
float scale_inv_1x128(const ops::Fp8Blocked& q, int64_t m, int64_t kb) {
  return q.scale_inv.data<float>()[kb * round_up4(q.codes.size(0)) + m];
}
// 128x128 of w [N,K]: [N/128][round_up(K/128,4)], block (nb, kb) at nb * round_up(K/128,4) + kb.
float scale_inv_128x128(const ops::Fp8Blocked& q, int64_t nb, int64_t kb) {
  return q.scale_inv.data<float>()[nb * round_up4(q.codes.size(1) / 128) + kb];
}
float scale_inv_of(const ops::Fp8Blocked& q, int64_t r, int64_t c) {
  return q.block_rows == 1 ? scale_inv_1x128(q, r, c / 128) : scale_inv_128x128(q, r / 128, c / 128);
}

class QuantizeBlockCpu : public ::testing::Test {
 protected:
  ContextPtr cpu = std::make_shared<CpuContext>();

  Tensor zeros(const Shape& shape, DType dtype = DType::F32) { return ops::zeros(cpu, shape, dtype); }

  static void set(Tensor& t, int64_t r, int64_t c, float v) { t.data<float>()[r * t.size(1) + c] = v; }
  static uint8_t code(const ops::Fp8Blocked& q, int64_t r, int64_t c) {
    return q.codes.data<uint8_t>()[r * q.codes.size(1) + c];
  }

  // Random non-zero values, log-uniform magnitudes 2^-6 .. 2^6 times a factor 2^(e) that differs per 128x128
  // region (so that blocks get different scales), both signs.
  Tensor random(const Shape& shape, DType dtype, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> log_mag(-6.0, 6.0);
    std::bernoulli_distribution negative(0.5);
    std::vector<double> v(static_cast<size_t>(shape[0] * shape[1]));
    for (int64_t r = 0; r < shape[0]; ++r) {
      for (int64_t c = 0; c < shape[1]; ++c) {
        const double region = static_cast<double>((r / 128 + 2 * (c / 128)) % 5) - 2.0;
        v[static_cast<size_t>(r * shape[1] + c)] = (negative(rng) ? -1.0 : 1.0) * std::exp2(log_mag(rng) + region);
      }
    }
    return ops::from_vector(cpu, shape, dtype, v);
  }
};

TEST_F(QuantizeBlockCpu, HandChecked1x128) {
  Tensor x = zeros({5, 256});
  // Row 0, group 0: amax 2 -> scale 448 / 2 = 224; codes of 448, 224, -112, 56.
  set(x, 0, 0, 2.0f);
  set(x, 0, 1, 1.0f);
  set(x, 0, 2, -0.5f);
  set(x, 0, 3, 0.25f);
  // Row 0, group 1: amax 448 -> scale 1; codes of 448 and 3.
  set(x, 0, 128, 448.0f);
  set(x, 0, 129, 3.0f);
  // Row 1: group 0 all zero (scale 1), group 1 amax 0.5 -> scale 896; 0.5 -> 448, -0.125 -> -112.
  set(x, 1, 200, 0.5f);
  set(x, 1, 255, -0.125f);
  // Row 3, group 0: amax 5 -> scale 89.6f; -5 * 89.6f rounds to -448.
  set(x, 3, 17, -5.0f);
  const ops::Fp8Blocked q = ops::quantize_1x128(x, DType::E4M3);
  EXPECT_EQ(q.block_rows, 1);
  EXPECT_EQ(q.block_cols, 128);
  ASSERT_EQ(q.codes.shape(), Shape({5, 256}));
  ASSERT_EQ(q.codes.dtype(), DType::E4M3);
  ASSERT_EQ(q.scale_inv.dtype(), DType::F32);
  ASSERT_EQ(q.scale_inv.shape(), Shape({2, 8}));  // [K/128, round_up(5, 4)]

  EXPECT_EQ(code(q, 0, 0), 0x7E);  // 448 = 1.75 * 2^8
  EXPECT_EQ(code(q, 0, 1), 0x76);  // 224 = 1.75 * 2^7
  EXPECT_EQ(code(q, 0, 2), 0xEE);  // -112 = -1.75 * 2^6
  EXPECT_EQ(code(q, 0, 3), 0x66);  // 56 = 1.75 * 2^5
  EXPECT_EQ(code(q, 0, 4), 0x00);
  EXPECT_EQ(code(q, 0, 128), 0x7E);
  EXPECT_EQ(code(q, 0, 129), 0x44);  // 3 = 1.5 * 2^1
  EXPECT_EQ(code(q, 1, 200), 0x7E);
  EXPECT_EQ(code(q, 1, 255), 0xEE);
  EXPECT_EQ(code(q, 3, 17), 0xFE);  // -448
  for (int64_t c = 0; c < 256; ++c) {
    EXPECT_EQ(code(q, 2, c), 0x00);
    EXPECT_EQ(code(q, 4, c), 0x00);
  }

  // The raw layout: scale_inv[kb * 8 + m].
  const float* si = q.scale_inv.data<float>();
  EXPECT_EQ(si[0 * 8 + 0], 1.0f / 224.0f);
  EXPECT_EQ(si[1 * 8 + 0], 1.0f);
  EXPECT_EQ(si[0 * 8 + 1], 1.0f);  // all-zero group
  EXPECT_EQ(si[1 * 8 + 1], 1.0f / 896.0f);
  EXPECT_EQ(si[0 * 8 + 2], 1.0f);
  EXPECT_EQ(si[0 * 8 + 3], 1.0f / (448.0f / 5.0f));
  EXPECT_EQ(si[1 * 8 + 3], 1.0f);
  for (int64_t kb = 0; kb < 2; ++kb) {
    for (int64_t m = 5; m < 8; ++m) EXPECT_EQ(si[kb * 8 + m], 1.0f) << "padding row " << m << " of group " << kb;
  }

  // Dequantization is code * scale_inv, exactly for these.
  const Tensor d = ops::dequantize(q);
  EXPECT_EQ(d.data<float>()[0], 2.0f);
  EXPECT_EQ(d.data<float>()[2], -0.5f);
  EXPECT_EQ(d.data<float>()[129], 3.0f);
  EXPECT_EQ(d.data<float>()[256 + 255], -0.125f);
}

TEST_F(QuantizeBlockCpu, HandChecked1x128E5M2) {
  Tensor x = zeros({4, 128});
  set(x, 0, 0, 2.0f);   // amax 2 -> scale 57344 / 2 = 28672
  set(x, 0, 1, -1.0f);  // -28672 = -1.75 * 2^14
  const ops::Fp8Blocked q = ops::quantize_1x128(x, DType::E5M2);
  EXPECT_EQ(q.codes.dtype(), DType::E5M2);
  EXPECT_EQ(code(q, 0, 0), 0x7B);  // 57344, E5M2's largest finite value
  EXPECT_EQ(code(q, 0, 1), 0xF7);
  EXPECT_EQ(q.scale_inv.data<float>()[0], 1.0f / 28672.0f);
}

TEST_F(QuantizeBlockCpu, HandChecked128x128) {
  Tensor w = zeros({256, 384});
  // Block (0,0): amax 4 -> scale 112; 1 -> 112, -4 -> -448.
  set(w, 0, 0, 1.0f);
  set(w, 5, 7, -4.0f);
  // Block (1,2): amax 448 -> scale 1.
  set(w, 200, 300, 448.0f);
  set(w, 255, 383, 0.5f);
  // Block (1,0): amax 0.25 (in its last row) -> scale 1792; 0.25 -> 448.
  set(w, 255, 127, 0.25f);
  const ops::Fp8Blocked q = ops::quantize_128x128(w, DType::E4M3);
  EXPECT_EQ(q.block_rows, 128);
  EXPECT_EQ(q.block_cols, 128);
  ASSERT_EQ(q.scale_inv.shape(), Shape({2, 4}));  // [N/128, round_up(K/128 = 3, 4)]
  EXPECT_EQ(code(q, 0, 0), 0x6E);                 // 112 = 1.75 * 2^6
  EXPECT_EQ(code(q, 5, 7), 0xFE);
  EXPECT_EQ(code(q, 200, 300), 0x7E);
  EXPECT_EQ(code(q, 255, 383), 0x30);  // 0.5
  EXPECT_EQ(code(q, 255, 127), 0x7E);
  EXPECT_EQ(code(q, 100, 200), 0x00);

  // The raw layout: scale_inv[nb * 4 + kb]; kb = 3 is padding.
  const float* si = q.scale_inv.data<float>();
  EXPECT_EQ(si[0 * 4 + 0], 1.0f / 112.0f);
  EXPECT_EQ(si[0 * 4 + 1], 1.0f);  // all-zero block
  EXPECT_EQ(si[0 * 4 + 2], 1.0f);
  EXPECT_EQ(si[1 * 4 + 0], 1.0f / 1792.0f);
  EXPECT_EQ(si[1 * 4 + 1], 1.0f);
  EXPECT_EQ(si[1 * 4 + 2], 1.0f);
  EXPECT_EQ(si[0 * 4 + 3], 1.0f);
  EXPECT_EQ(si[1 * 4 + 3], 1.0f);

  const Tensor d = ops::dequantize(q);
  EXPECT_EQ(d.data<float>()[5 * 384 + 7], -4.0f);
  EXPECT_EQ(d.data<float>()[255 * 384 + 127], 0.25f);
  EXPECT_EQ(d.data<float>()[255 * 384 + 383], 0.5f);
}

// amax_128x128 is max |w| of each block; quantize_128x128_with_maxima given those amaxes, and
// scale_inv_128x128_from_maxima, give quantize_128x128's bytes (a sharded weight's pieces quantised with
// their blocks' amaxes are the whole weight's: dist/fp8_gather.h). Also for a strided (transposed) w.
TEST_F(QuantizeBlockCpu, GivenTheBlocksOwnMaximaIsQuantize128x128) {
  for (DType in : {DType::F32, DType::BF16}) {
    const Tensor w = random({384, 640}, in, 21);
    const Tensor own = ops::amax_128x128(w);
    ASSERT_EQ(own.shape(), Shape({3, 5}));
    ASSERT_EQ(own.dtype(), DType::F32);
    const std::vector<double> values = ops::to_double_vector(w), maxima = ops::to_double_vector(own);
    for (int64_t nb = 0; nb < 3; ++nb) {
      for (int64_t kb = 0; kb < 5; ++kb) {
        double amax = 0.0;
        for (int64_t r = 128 * nb; r < 128 * nb + 128; ++r)
          for (int64_t c = 128 * kb; c < 128 * kb + 128; ++c)
            amax = std::max(amax, std::abs(values[r * 640 + c]));
        EXPECT_EQ(maxima[nb * 5 + kb], amax) << "block (" << nb << ", " << kb << ")";
      }
    }
    for (DType fmt : {DType::E4M3, DType::E5M2}) {
      const ops::Fp8Blocked q = ops::quantize_128x128(w, fmt);
      const ops::Fp8Blocked given = ops::quantize_128x128_with_maxima(w, own, fmt);
      EXPECT_EQ(given.block_rows, 128);
      EXPECT_TRUE(ops::to_bytes(given.codes) == ops::to_bytes(q.codes))
          << dtype_name(in) << " " << dtype_name(fmt);
      EXPECT_TRUE(ops::to_bytes(given.scale_inv) == ops::to_bytes(q.scale_inv)) << dtype_name(fmt);
      const Tensor from_maxima = ops::scale_inv_128x128_from_maxima(own, fmt);
      EXPECT_TRUE(ops::to_bytes(from_maxima) == ops::to_bytes(q.scale_inv)) << "padding included";
    }
  }
  const Tensor wt = random({640, 384}, DType::F32, 22).transpose(0, 1);
  EXPECT_TRUE(ops::to_bytes(ops::amax_128x128(wt)) == ops::to_bytes(ops::amax_128x128(ops::contiguous(wt))));
}

// A given amax sets its block's scale, whatever the block holds: larger (the block's other elements are on
// other ranks) or smaller (then saturated); zero gives scale 1, NaN poisons the block.
TEST_F(QuantizeBlockCpu, GivenMaximaSetTheScales) {
  Tensor w = zeros({128, 384});
  set(w, 0, 0, 1.0f);
  set(w, 3, 130, 1.0f);
  set(w, 7, 300, 1.0f);
  const Tensor maxima =
      ops::from_vector(cpu, {1, 3}, DType::F32, std::vector<float>{2.0f, 0.0f, std::nanf("")});
  const ops::Fp8Blocked q = ops::quantize_128x128_with_maxima(w, maxima, DType::E4M3);
  EXPECT_EQ(code(q, 0, 0), 0x76);    // 1 * 448 / 2 = 224 = 1.75 * 2^7
  EXPECT_EQ(code(q, 3, 130), 0x38);  // scale 1: 1.0
  EXPECT_EQ(code(q, 7, 300), 0x7F);  // NaN
  EXPECT_EQ(code(q, 1, 1), 0x00);
  const float* si = q.scale_inv.data<float>();
  EXPECT_EQ(si[0], 2.0f / 448.0f);
  EXPECT_EQ(si[1], 1.0f);
  EXPECT_EQ(bits_of(si[2]), kCanonicalNan);
  EXPECT_EQ(si[3], 1.0f);  // padding
  EXPECT_TRUE(ops::to_bytes(ops::scale_inv_128x128_from_maxima(maxima, DType::E4M3)) ==
              ops::to_bytes(q.scale_inv));
}

TEST_F(QuantizeBlockCpu, GivenMaximaErrors) {
  using test::expect_error_containing;
  const Tensor w = zeros({256, 128});
  expect_error_containing(
      [&] {
        ops::quantize_128x128_with_maxima(w, zeros({2, 2}), DType::E4M3);
      },
      "block maxima must be f32 of shape (2,1)");
  expect_error_containing(
      [&] {
        ops::quantize_128x128_with_maxima(w, zeros({2, 1}, DType::F64), DType::E4M3);
      },
      "block maxima must be f32");
  expect_error_containing([&] { ops::quantize_128x128_with_maxima(w, Tensor(), DType::E4M3); },
                          "block maxima");
  expect_error_containing([&] { ops::amax_128x128(zeros({100, 128})); }, "multiples of 128");
  expect_error_containing([&] { ops::scale_inv_128x128_from_maxima(zeros({4}), DType::E4M3); }, "2-D");
  expect_error_containing(
      [&] {
        ops::scale_inv_128x128_from_maxima(zeros({1, 1}), DType::BF16);
      },
      "not an FP8 format");
}

TEST_F(QuantizeBlockCpu, AllZeroBlocks) {
  for (DType fmt : {DType::E4M3, DType::E5M2}) {
    const ops::Fp8Blocked r = ops::quantize_1x128(zeros({6, 256}), fmt);
    const ops::Fp8Blocked b = ops::quantize_128x128(zeros({128, 640}), fmt);
    for (const ops::Fp8Blocked* q : {&r, &b}) {
      for (int64_t i = 0; i < q->codes.numel(); ++i) ASSERT_EQ(q->codes.data<uint8_t>()[i], 0x00);
      for (int64_t i = 0; i < q->scale_inv.numel(); ++i) ASSERT_EQ(q->scale_inv.data<float>()[i], 1.0f);
      const Tensor d = ops::dequantize(*q);
      for (int64_t i = 0; i < d.numel(); ++i) ASSERT_EQ(d.data<float>()[i], 0.0f);
    }
  }
  // A zero group among non-zero ones keeps scale 1 and does not disturb its neighbours.
  Tensor x = random({4, 384}, DType::F32, 5);
  for (int64_t c = 128; c < 256; ++c) set(x, 2, c, 0.0f);
  const ops::Fp8Blocked q = ops::quantize_1x128(x, DType::E4M3);
  EXPECT_EQ(scale_inv_1x128(q, 2, 1), 1.0f);
  EXPECT_NE(scale_inv_1x128(q, 2, 0), 1.0f);
  EXPECT_NE(scale_inv_1x128(q, 2, 2), 1.0f);
}

TEST_F(QuantizeBlockCpu, NanAndInfPoisonTheirBlockOnly) {
  const float nan = std::nanf(""), inf = INFINITY;
  for (DType fmt : {DType::E4M3, DType::E5M2}) {
    // 1x128: NaN in group (1,1), -inf in group (2,0).
    const Tensor clean = random({4, 384}, DType::F32, 11);
    Tensor x = ops::clone(clean);
    set(x, 1, 130, nan);
    set(x, 2, 0, -inf);
    const ops::Fp8Blocked q = ops::quantize_1x128(x, fmt);
    const ops::Fp8Blocked qc = ops::quantize_1x128(clean, fmt);
    const Tensor d = ops::dequantize(q);
    for (int64_t m = 0; m < 4; ++m) {
      for (int64_t kb = 0; kb < 3; ++kb) {
        const bool poisoned = (m == 1 && kb == 1) || (m == 2 && kb == 0);
        const float si = scale_inv_1x128(q, m, kb);
        if (poisoned) {
          EXPECT_EQ(bits_of(si), kCanonicalNan) << "group " << m << "," << kb;
        } else {
          EXPECT_EQ(bits_of(si), bits_of(scale_inv_1x128(qc, m, kb))) << "group " << m << "," << kb;
        }
        for (int64_t c = kb * 128; c < kb * 128 + 128; ++c) {
          const int64_t i = m * 384 + c;
          if (poisoned) {
            ASSERT_TRUE(std::isnan(decode(q.codes, i))) << "element " << m << "," << c;
            ASSERT_TRUE(std::isnan(d.data<float>()[i]));
          } else {
            ASSERT_EQ(q.codes.data<uint8_t>()[i], qc.codes.data<uint8_t>()[i]) << "element " << m << "," << c;
          }
        }
      }
    }

    // 128x128: +inf in block (1,0), NaN in block (0,2).
    const Tensor wclean = random({256, 384}, DType::F32, 12);
    Tensor w = ops::clone(wclean);
    set(w, 130, 5, inf);
    set(w, 127, 383, nan);
    const ops::Fp8Blocked qw = ops::quantize_128x128(w, fmt);
    const ops::Fp8Blocked qwc = ops::quantize_128x128(wclean, fmt);
    for (int64_t r = 0; r < 256; ++r) {
      for (int64_t c = 0; c < 384; ++c) {
        const int64_t nb = r / 128, kb = c / 128, i = r * 384 + c;
        const bool poisoned = (nb == 1 && kb == 0) || (nb == 0 && kb == 2);
        if (poisoned) {
          ASSERT_TRUE(std::isnan(decode(qw.codes, i))) << "element " << r << "," << c;
        } else {
          ASSERT_EQ(qw.codes.data<uint8_t>()[i], qwc.codes.data<uint8_t>()[i]) << "element " << r << "," << c;
        }
      }
    }
    EXPECT_EQ(bits_of(scale_inv_128x128(qw, 1, 0)), kCanonicalNan);
    EXPECT_EQ(bits_of(scale_inv_128x128(qw, 0, 2)), kCanonicalNan);
    EXPECT_EQ(scale_inv_128x128(qw, 0, 0), scale_inv_128x128(qwc, 0, 0));
    EXPECT_EQ(scale_inv_128x128(qw, 1, 3), 1.0f);  // padding stays 1
  }
}

TEST_F(QuantizeBlockCpu, DequantizeWithinHalfUlp) {
  struct Format {
    DType fmt;
    double half_ulp;      // relative, normal range
    double half_subnorm;  // absolute in scaled units
  };
  const Format formats[] = {{DType::E4M3, std::exp2(-4), std::exp2(-10)},
                            {DType::E5M2, std::exp2(-3), std::exp2(-17)}};
  const double slack = std::exp2(-20);
  uint32_t seed = 100;
  for (const Format& f : formats) {
    for (DType in : {DType::F32, DType::BF16}) {
      for (bool blocks_2d : {false, true}) {
        const Shape shape = blocks_2d ? Shape{256, 384} : Shape{12, 640};
        const Tensor x = random(shape, in, seed++);
        const std::vector<double> xv = ops::to_double_vector(x);
        const ops::Fp8Blocked q = blocks_2d ? ops::quantize_128x128(x, f.fmt) : ops::quantize_1x128(x, f.fmt);
        const Tensor d = ops::dequantize(q, DType::F32);
        const Tensor d16 = ops::dequantize(q, DType::BF16);
        ASSERT_EQ(d16.dtype(), DType::BF16);
        double worst = 0.0;
        for (int64_t r = 0; r < shape[0]; ++r) {
          for (int64_t c = 0; c < shape[1]; ++c) {
            const int64_t i = r * shape[1] + c;
            const double si = scale_inv_of(q, r, c);
            const double exact = decode(q.codes, i) * si;  // exact in double
            // dequantize is code * scale_inv rounded to f32, then (for bf16 output) to bf16.
            ASSERT_EQ(d.data<float>()[i], static_cast<float>(exact)) << "element " << i;
            ASSERT_EQ(d16.data<uint16_t>()[i], float_to_bf16(static_cast<float>(exact))) << "element " << i;
            const double x_i = xv[static_cast<size_t>(i)];
            const double err = std::fabs(exact - x_i);
            const double bound = (f.half_ulp + slack) * std::fabs(x_i) + f.half_subnorm * si;
            ASSERT_LE(err, bound) << dtype_name(f.fmt) << " element " << r << "," << c << ": x " << x_i
                                  << " dequantized " << exact;
            worst = std::max(worst, err / std::fabs(x_i));
          }
        }
        // The bound is attained closely by some element (it is the half-ulp, not a loose guess).
        EXPECT_GT(worst, 0.5 * f.half_ulp) << dtype_name(f.fmt);
      }
    }
  }
}

TEST_F(QuantizeBlockCpu, LowPrecisionInputsMatchF32) {
  // bf16 and f16 values widen exactly, so they quantize exactly as their f32 copies do.
  for (DType in : {DType::BF16, DType::F16}) {
    const Tensor x = random({8, 256}, in, 31);
    const Tensor x32 = ops::from_vector(cpu, x.shape(), DType::F32, ops::to_double_vector(x));
    const Tensor w = random({128, 256}, in, 32);
    const Tensor w32 = ops::from_vector(cpu, w.shape(), DType::F32, ops::to_double_vector(w));
    const ops::Fp8Blocked a = ops::quantize_1x128(x, DType::E4M3), a32 = ops::quantize_1x128(x32, DType::E4M3);
    const ops::Fp8Blocked b = ops::quantize_128x128(w, DType::E4M3), b32 = ops::quantize_128x128(w32, DType::E4M3);
    EXPECT_EQ(std::memcmp(a.codes.data_ptr(), a32.codes.data_ptr(), a.codes.nbytes()), 0);
    EXPECT_EQ(std::memcmp(a.scale_inv.data_ptr(), a32.scale_inv.data_ptr(), a.scale_inv.nbytes()), 0);
    EXPECT_EQ(std::memcmp(b.codes.data_ptr(), b32.codes.data_ptr(), b.codes.nbytes()), 0);
    EXPECT_EQ(std::memcmp(b.scale_inv.data_ptr(), b32.scale_inv.data_ptr(), b.scale_inv.nbytes()), 0);
  }
}

TEST_F(QuantizeBlockCpu, NonContiguousInputIsCopied) {
  const Tensor w = random({256, 128}, DType::F32, 41);
  const Tensor wt = w.transpose(0, 1);  // [128, 256] view
  const ops::Fp8Blocked q = ops::quantize_128x128(wt, DType::E4M3);
  const ops::Fp8Blocked qc = ops::quantize_128x128(ops::contiguous(wt), DType::E4M3);
  EXPECT_EQ(std::memcmp(q.codes.data_ptr(), qc.codes.data_ptr(), q.codes.nbytes()), 0);
  EXPECT_EQ(std::memcmp(q.scale_inv.data_ptr(), qc.scale_inv.data_ptr(), q.scale_inv.nbytes()), 0);
}

TEST_F(QuantizeBlockCpu, TransposeIsQuantizingTheTranspose) {
  // transpose_128x128(quantize_128x128(w)) == quantize_128x128(w^T) byte for byte, codes and scales with their
  // padding: [256, 384] has 3 K blocks (ld 4) and its transpose 2 (ld 4); [128, 640] 5 (ld 8) and 1 (ld 4),
  // [384, 128] 1 and 3. A NaN block keeps its NaN codes and scale in its transposed place.
  uint32_t seed = 51;
  for (const Shape& shape : {Shape{256, 384}, Shape{128, 640}, Shape{384, 128}}) {
    for (DType fmt : {DType::E4M3, DType::E5M2}) {
      Tensor w = random(shape, DType::F32, seed++);
      const int64_t nan_r = shape[0] > 128 ? 130 : 1, nan_c = shape[0] > 128 ? 1 : 130;
      w.data<float>()[nan_r * shape[1] + nan_c] = std::nanf("");
      const ops::Fp8Blocked q = ops::quantize_128x128(w, fmt, Fp8Saturation::Saturate, MemoryCategory::Weights);
      const ops::Fp8Blocked t = ops::transpose_128x128(q);
      const ops::Fp8Blocked want = ops::quantize_128x128(ops::contiguous(w.transpose(0, 1)), fmt);
      const std::string what = shape_str(shape) + " " + std::string(dtype_name(fmt));
      EXPECT_EQ(t.block_rows, 128);
      EXPECT_EQ(t.block_cols, 128);
      ASSERT_EQ(t.codes.shape(), want.codes.shape()) << what;
      ASSERT_EQ(t.codes.dtype(), fmt) << what;
      ASSERT_EQ(t.scale_inv.shape(), want.scale_inv.shape()) << what;
      EXPECT_EQ(std::memcmp(t.codes.data_ptr(), want.codes.data_ptr(), want.codes.nbytes()), 0) << what;
      EXPECT_EQ(std::memcmp(t.scale_inv.data_ptr(), want.scale_inv.data_ptr(), want.scale_inv.nbytes()), 0) << what;
      EXPECT_TRUE(std::isnan(scale_inv_128x128(t, nan_c / 128, nan_r / 128))) << what;
      // Accounted where the source is (a model's weight copies: Weights).
      EXPECT_EQ(t.codes.storage()->category(), MemoryCategory::Weights);
      EXPECT_EQ(t.scale_inv.storage()->category(), MemoryCategory::Weights);
    }
  }
  using test::expect_error_containing;
  const ops::Fp8Blocked rowwise = ops::quantize_1x128(zeros({128, 128}), DType::E4M3);
  expect_error_containing([&] { ops::transpose_128x128(rowwise); }, "expected a 128x128-quantized tensor");
}

// quantize_1x128_transposed(x) == quantize_1x128(contiguous(x^T)) byte for byte, codes and scales with their
// padding. Shapes: K (x's columns, the rows of x^T) a multiple of 4 or not (padded scale rows: 130, 1, 200),
// of 64 or not (the CUDA kernel's column tiles), one or several 128-row groups.
TEST_F(QuantizeBlockCpu, TransposedIsQuantizingTheTranspose) {
  const Shape shapes[] = {{128, 128}, {256, 384}, {384, 130}, {128, 1}, {640, 200}};
  uint32_t seed = 61;
  for (const Shape& shape : shapes) {
    for (DType in : {DType::F32, DType::BF16, DType::F16}) {
      const Tensor x = random(shape, in, seed++);
      const Tensor xt = ops::contiguous(x.transpose(0, 1));
      for (DType fmt : {DType::E4M3, DType::E5M2}) {
        for (Fp8Saturation sat : {Fp8Saturation::Saturate, Fp8Saturation::NoSaturate}) {
          const std::string what = shape_str(shape) + " " + std::string(dtype_name(in)) + "->" +
                                   std::string(dtype_name(fmt)) +
                                   (sat == Fp8Saturation::Saturate ? " sat" : " nosat");
          const ops::Fp8Blocked t = ops::quantize_1x128_transposed(x, fmt, sat);
          const ops::Fp8Blocked want = ops::quantize_1x128(xt, fmt, sat);
          EXPECT_EQ(t.block_rows, 1) << what;
          EXPECT_EQ(t.block_cols, 128) << what;
          ASSERT_EQ(t.codes.shape(), Shape({shape[1], shape[0]})) << what;
          ASSERT_EQ(t.codes.dtype(), fmt) << what;
          ASSERT_EQ(t.scale_inv.shape(), want.scale_inv.shape()) << what;
          ASSERT_EQ(t.scale_inv.dtype(), DType::F32) << what;
          EXPECT_EQ(std::memcmp(t.codes.data_ptr(), want.codes.data_ptr(), want.codes.nbytes()), 0) << what;
          EXPECT_EQ(std::memcmp(t.scale_inv.data_ptr(), want.scale_inv.data_ptr(), want.scale_inv.nbytes()), 0)
              << what;
        }
      }
    }
  }
}

TEST_F(QuantizeBlockCpu, TransposedHandChecked) {
  // x [128, 3]: column 0 holds 2 (row 0) and -0.5 (row 127): amax 2, scale 224; column 1 is zero; column 2
  // holds 448 (row 64). Codes [3, 128]; scales [1, 4], the last one padding.
  Tensor x = zeros({128, 3});
  set(x, 0, 0, 2.0f);
  set(x, 127, 0, -0.5f);
  set(x, 64, 2, 448.0f);
  const ops::Fp8Blocked q = ops::quantize_1x128_transposed(x, DType::E4M3);
  ASSERT_EQ(q.codes.shape(), Shape({3, 128}));
  ASSERT_EQ(q.scale_inv.shape(), Shape({1, 4}));
  EXPECT_EQ(code(q, 0, 0), 0x7E);    // 448
  EXPECT_EQ(code(q, 0, 127), 0xEE);  // -112
  EXPECT_EQ(code(q, 0, 1), 0x00);
  EXPECT_EQ(code(q, 2, 64), 0x7E);
  for (int64_t m = 0; m < 128; ++m) EXPECT_EQ(code(q, 1, m), 0x00);
  const float* si = q.scale_inv.data<float>();
  EXPECT_EQ(si[0], 1.0f / 224.0f);
  EXPECT_EQ(si[1], 1.0f);  // all-zero group
  EXPECT_EQ(si[2], 1.0f);
  EXPECT_EQ(si[3], 1.0f);  // padding row
}

TEST_F(QuantizeBlockCpu, TransposedNanInfAndZeroGroupsAsTheTranspose) {
  // NaN, +inf and -inf each poison their group of x^T (128 rows of one column of x) exactly as they do when
  // the transpose is quantised: canonical NaN scale and NaN codes there, the other groups untouched; a zero
  // group keeps scale 1.
  const float nan = std::nanf(""), inf = INFINITY;
  for (DType fmt : {DType::E4M3, DType::E5M2}) {
    Tensor x = random({384, 130}, DType::F32, 71);
    set(x, 5, 3, nan);      // group (k 3, mb 0)
    set(x, 200, 129, inf);  // group (k 129, mb 1)
    set(x, 383, 0, -inf);   // group (k 0, mb 2)
    for (int64_t r = 128; r < 256; ++r) set(x, r, 7, 0.0f);  // group (k 7, mb 1)
    const ops::Fp8Blocked t = ops::quantize_1x128_transposed(x, fmt);
    const ops::Fp8Blocked want = ops::quantize_1x128(ops::contiguous(x.transpose(0, 1)), fmt);
    const std::string what(dtype_name(fmt));
    EXPECT_EQ(std::memcmp(t.codes.data_ptr(), want.codes.data_ptr(), want.codes.nbytes()), 0) << what;
    EXPECT_EQ(std::memcmp(t.scale_inv.data_ptr(), want.scale_inv.data_ptr(), want.scale_inv.nbytes()), 0) << what;
    EXPECT_EQ(bits_of(scale_inv_1x128(t, 3, 0)), kCanonicalNan) << what;
    EXPECT_EQ(bits_of(scale_inv_1x128(t, 129, 1)), kCanonicalNan) << what;
    EXPECT_EQ(bits_of(scale_inv_1x128(t, 0, 2)), kCanonicalNan) << what;
    EXPECT_EQ(scale_inv_1x128(t, 7, 1), 1.0f) << what;
    EXPECT_EQ(scale_inv_1x128(t, 3, 1), scale_inv_1x128(want, 3, 1)) << what;
    EXPECT_TRUE(std::isnan(decode(t.codes, 3 * 384 + 100))) << what;
    EXPECT_FALSE(std::isnan(decode(t.codes, 3 * 384 + 200))) << what;
  }
}

TEST_F(QuantizeBlockCpu, TransposedInputsAnyStridesEmptyAndCategory) {
  // A transposed view is made contiguous first: quantising the view of w^T gives quantize_1x128(w).
  const Tensor w = random({256, 384}, DType::BF16, 81);
  const ops::Fp8Blocked a = ops::quantize_1x128_transposed(w.transpose(0, 1), DType::E4M3);
  const ops::Fp8Blocked b = ops::quantize_1x128(w, DType::E4M3);
  EXPECT_EQ(std::memcmp(a.codes.data_ptr(), b.codes.data_ptr(), b.codes.nbytes()), 0);
  EXPECT_EQ(std::memcmp(a.scale_inv.data_ptr(), b.scale_inv.data_ptr(), b.scale_inv.nbytes()), 0);

  const ops::Fp8Blocked e = ops::quantize_1x128_transposed(zeros({0, 256}), DType::E4M3);
  EXPECT_EQ(e.codes.shape(), Shape({256, 0}));
  EXPECT_EQ(e.scale_inv.shape(), Shape({0, 256}));
  const ops::Fp8Blocked k0 = ops::quantize_1x128_transposed(zeros({128, 0}), DType::E4M3);
  EXPECT_EQ(k0.codes.shape(), Shape({0, 128}));
  EXPECT_EQ(k0.scale_inv.shape(), Shape({1, 0}));

  const ops::Fp8Blocked c =
      ops::quantize_1x128_transposed(zeros({128, 4}), DType::E5M2, Fp8Saturation::Saturate, MemoryCategory::Weights);
  EXPECT_EQ(c.codes.storage()->category(), MemoryCategory::Weights);
  EXPECT_EQ(c.scale_inv.storage()->category(), MemoryCategory::Weights);
}

TEST_F(QuantizeBlockCpu, PairIsBothQuantizers) {
  // quantize_1x128_pair gives the bytes of quantize_1x128 and quantize_1x128_transposed (on the CPU it runs
  // them; the CUDA test holds its one-read kernel to these bytes), from a strided view too.
  const Tensor x = random({256, 384}, DType::BF16, 31);
  const Tensor strided = random({384, 256}, DType::BF16, 32).transpose(0, 1);
  for (const Tensor& in : {x, strided}) {
    const ops::Fp8BlockedPair p = ops::quantize_1x128_pair(in, DType::E5M2);
    const ops::Fp8Blocked rows = ops::quantize_1x128(in, DType::E5M2);
    const ops::Fp8Blocked cols = ops::quantize_1x128_transposed(in, DType::E5M2);
    EXPECT_TRUE(ops::to_bytes(p.rows.codes) == ops::to_bytes(rows.codes));
    EXPECT_TRUE(ops::to_bytes(p.rows.scale_inv) == ops::to_bytes(rows.scale_inv));
    EXPECT_TRUE(ops::to_bytes(p.transposed.codes) == ops::to_bytes(cols.codes));
    EXPECT_TRUE(ops::to_bytes(p.transposed.scale_inv) == ops::to_bytes(cols.scale_inv));
    EXPECT_EQ(p.transposed.codes.shape(), Shape({384, 256}));
    EXPECT_EQ(p.rows.block_rows, 1);
  }
  test::expect_error_containing([&] { ops::quantize_1x128_pair(zeros({100, 128}), DType::E4M3); },
                                "M = 100 (rows of (100,128)) must be a multiple of 128");
  test::expect_error_containing([&] { ops::quantize_1x128_pair(zeros({128, 100}), DType::E4M3); },
                                "must be a multiple of 128 for 1x128 groups");
}

TEST_F(QuantizeBlockCpu, TransposedErrors) {
  using test::expect_error_containing;
  expect_error_containing([&] { ops::quantize_1x128_transposed(zeros({100, 128}), DType::E4M3); },
                          "M = 100 (rows of (100,128)) must be a multiple of 128");
  expect_error_containing([&] { ops::quantize_1x128_transposed(zeros({2, 128, 128}), DType::E4M3); },
                          "must be 2-D");
  expect_error_containing([&] { ops::quantize_1x128_transposed(zeros({128, 128}), DType::BF16); },
                          "not an FP8 format");
  expect_error_containing([&] { ops::quantize_1x128_transposed(zeros({128, 128}, DType::I32), DType::E4M3); },
                          "input dtype i32");
  expect_error_containing([&] { ops::quantize_1x128_transposed(Tensor(), DType::E4M3); }, "undefined");
  // The backend checks its outputs against x^T's shapes.
  const Tensor x = zeros({128, 8});
  Tensor codes = Tensor::empty(cpu, {128, 8}, DType::E4M3);  // x's shape, not x^T's
  Tensor scales = Tensor::empty(cpu, {1, 8}, DType::F32);
  expect_error_containing([&] { cpu::quantize_1x128_transposed(x, Fp8Saturation::Saturate, codes, scales); },
                          "codes shape (128,8) does not match (8,128)");
  Tensor codes_t = Tensor::empty(cpu, {8, 128}, DType::E4M3);
  Tensor scales_bad = Tensor::empty(cpu, {8, 1}, DType::F32);
  expect_error_containing([&] { cpu::quantize_1x128_transposed(x, Fp8Saturation::Saturate, codes_t, scales_bad); },
                          "scale_inv must be f32 of shape (1,8)");
}

TEST_F(QuantizeBlockCpu, OutputsInTheGivenMemoryCategory) {
  const ops::Fp8Blocked a = ops::quantize_1x128(zeros({4, 128}), DType::E4M3);
  EXPECT_EQ(a.codes.storage()->category(), MemoryCategory::Activations);
  const ops::Fp8Blocked w =
      ops::quantize_1x128(zeros({4, 128}), DType::E4M3, Fp8Saturation::Saturate, MemoryCategory::Weights);
  EXPECT_EQ(w.codes.storage()->category(), MemoryCategory::Weights);
  EXPECT_EQ(w.scale_inv.storage()->category(), MemoryCategory::Weights);
}

TEST_F(QuantizeBlockCpu, EmptyTensors) {
  const ops::Fp8Blocked r = ops::quantize_1x128(zeros({0, 256}), DType::E4M3);
  EXPECT_EQ(r.scale_inv.shape(), Shape({2, 0}));
  const ops::Fp8Blocked k0 = ops::quantize_1x128(zeros({3, 0}), DType::E4M3);
  EXPECT_EQ(k0.scale_inv.shape(), Shape({0, 4}));
  const ops::Fp8Blocked b = ops::quantize_128x128(zeros({128, 0}), DType::E4M3);
  EXPECT_EQ(b.scale_inv.shape(), Shape({1, 0}));
  EXPECT_EQ(ops::dequantize(r).shape(), Shape({0, 256}));
}

TEST_F(QuantizeBlockCpu, Errors) {
  using test::expect_error_containing;
  expect_error_containing([&] { ops::quantize_1x128(zeros({4, 100}), DType::E4M3); }, "multiple of 128");
  expect_error_containing([&] { ops::quantize_1x128(zeros({2, 4, 128}), DType::E4M3); }, "must be 2-D");
  expect_error_containing([&] { ops::quantize_128x128(zeros({100, 128}), DType::E4M3); }, "multiples of 128");
  expect_error_containing([&] { ops::quantize_128x128(zeros({128, 192}), DType::E4M3); }, "multiples of 128");
  expect_error_containing([&] { ops::quantize_1x128(zeros({4, 128}), DType::BF16); }, "not an FP8 format");
  expect_error_containing([&] { ops::quantize_128x128(zeros({128, 128}, DType::I32), DType::E4M3); },
                          "input dtype i32");
  expect_error_containing([&] { ops::quantize_1x128(Tensor(), DType::E4M3); }, "undefined");

  const ops::Fp8Blocked q = ops::quantize_1x128(zeros({4, 128}), DType::E4M3);
  expect_error_containing([&] { ops::dequantize(q, DType::F16); }, "output dtype f16");
  ops::Fp8Blocked bad = q;
  bad.block_rows = 2;
  expect_error_containing([&] { ops::dequantize(bad); }, "2x128");
  bad = q;
  bad.scale_inv = zeros({1, 3});
  expect_error_containing([&] { ops::dequantize(bad); }, "scale_inv");
}

}  // namespace
}  // namespace coat
