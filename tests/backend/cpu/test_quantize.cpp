// CPU reference of FP8 quantization: round-trip error within the format's bound, codes equal to an
// independent encoding, NaN/inf propagation, zero groups, fused transpose, argument checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "coat/backend/cpu/quantize.h"
#include "coat/core/float_formats.h"

namespace coat {
namespace {

ContextPtr cpu() {
  static ContextPtr context = std::make_shared<CpuContext>();
  return context;
}

float load(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::F32:
      return t.data<float>()[i];
    case DType::BF16:
      return bf16_to_float(t.data<uint16_t>()[i]);
    case DType::F16:
      return f16_to_float(t.data<uint16_t>()[i]);
    case DType::E4M3:
      return e4m3_to_float(t.data<uint8_t>()[i]);
    case DType::E5M2:
      return e5m2_to_float(t.data<uint8_t>()[i]);
    default:
      ADD_FAILURE() << "unexpected dtype";
      return 0.0f;
  }
}

void store(Tensor& t, int64_t i, float v) {
  switch (t.dtype()) {
    case DType::F32:
      t.data<float>()[i] = v;
      return;
    case DType::BF16:
      t.data<uint16_t>()[i] = float_to_bf16(v);
      return;
    case DType::F16:
      t.data<uint16_t>()[i] = float_to_f16(v);
      return;
    default:
      ADD_FAILURE() << "unexpected dtype";
  }
}

/// Random non-zero values of both signs spread over about 2^-6 .. 2^6 (log-uniform), so that every
/// group has its own amax and the quantized values fill the format's normal range.
Tensor random_tensor(const Shape& shape, DType dtype, uint32_t seed) {
  Tensor t = Tensor::empty(cpu(), shape, dtype);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> exponent(-6.0f, 6.0f);
  std::bernoulli_distribution negative(0.5);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float magnitude = std::exp2(exponent(rng));
    store(t, i, negative(rng) ? -magnitude : magnitude);
  }
  return t;
}

Tensor scalar_f32(float v) {
  Tensor t = Tensor::empty(cpu(), {1}, DType::F32);
  *t.data<float>() = v;
  return t;
}

float fmt_max(DType fmt) {
  return fmt == DType::E4M3 ? kE4M3Max : kE5M2Max;
}
uint8_t encode(DType fmt, float v, Fp8Saturation sat) {
  return fmt == DType::E4M3 ? float_to_e4m3(v, sat) : float_to_e5m2(v, sat);
}
float decode(DType fmt, uint8_t c) {
  return fmt == DType::E4M3 ? e4m3_to_float(c) : e5m2_to_float(c);
}
/// Half an ulp relative to the value for normal numbers: 2^-(mantissa bits + 1).
double relative_bound(DType fmt) {
  return fmt == DType::E4M3 ? std::ldexp(1.0, -4) : std::ldexp(1.0, -3);
}
double min_normal(DType fmt) {
  return fmt == DType::E4M3 ? std::ldexp(1.0, -6) : std::ldexp(1.0, -14);
}
/// Half the subnormal spacing: the absolute error bound below the normal range.
double subnormal_half_step(DType fmt) {
  return fmt == DType::E4M3 ? std::ldexp(1.0, -10) : std::ldexp(1.0, -17);
}

/// Besides the FP8 rounding, a round trip rounds x * scale, 1 / scale and code * scale_inv in float: three
/// relative errors of at most 2^-24 each, so the bound gets a slack of 2^-21 relative.
constexpr double kFloatSlack = 0x1p-21;

void expect_round_trip_within_bound(const Tensor& x, const Tensor& deq, const std::vector<float>& scales,
                                    int64_t group_size, DType fmt) {
  int64_t checked_normal = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double xi = load(x, i), di = load(deq, i), scale = scales[i / group_size];
    const double err = std::fabs(di - xi);
    if (std::fabs(xi) * scale >= min_normal(fmt)) {
      ++checked_normal;
      ASSERT_LE(err, (relative_bound(fmt) + kFloatSlack) * std::fabs(xi)) << "element " << i << " x=" << xi;
    } else {
      ASSERT_LE(err, subnormal_half_step(fmt) / scale * (1 + kFloatSlack) + kFloatSlack * std::fabs(xi))
          << "element " << i << " x=" << xi;
    }
  }
  EXPECT_GT(checked_normal, x.numel() / 2);
}

// ---- per tensor ----

TEST(CpuQuantize, PerTensorRoundTripWithinFormatBound) {
  // E4M3: 3 mantissa bits, relative error <= 2^-4 of |x| in the normal range; E5M2: 2 bits, 2^-3.
  for (DType fmt : {DType::E4M3, DType::E5M2}) {
    const Tensor x = random_tensor({37, 96}, DType::F32, 1);
    Tensor amax = scalar_f32(0), scale = scalar_f32(0), scale_inv = scalar_f32(0);
    cpu::tensor_amax(x, amax);
    cpu::compute_scale(amax, fmt, scale, scale_inv);
    Tensor codes = Tensor::empty(cpu(), x.shape(), fmt);
    cpu::quantize_per_tensor(x, scale, Fp8Saturation::Saturate, codes);
    Tensor deq = Tensor::empty(cpu(), x.shape(), DType::F32);
    cpu::dequantize_per_tensor(codes, scale_inv, deq);
    expect_round_trip_within_bound(x, deq, {*scale.data<float>()}, x.numel(), fmt);
  }
}

TEST(CpuQuantize, AmaxAndScalesMatchIndependentComputation) {
  for (DType in : {DType::F32, DType::BF16, DType::F16}) {
    for (DType fmt : {DType::E4M3, DType::E5M2}) {
      const Tensor x = random_tensor({5, 7, 33}, in, 2);
      float expected_amax = 0;
      for (int64_t i = 0; i < x.numel(); ++i) expected_amax = std::max(expected_amax, std::fabs(load(x, i)));
      Tensor amax = scalar_f32(-1), scale = scalar_f32(0), scale_inv = scalar_f32(0);
      cpu::tensor_amax(x, amax);
      cpu::compute_scale(amax, fmt, scale, scale_inv);
      EXPECT_EQ(*amax.data<float>(), expected_amax);
      const float expected_scale = fmt_max(fmt) / expected_amax;
      EXPECT_EQ(*scale.data<float>(), expected_scale);
      EXPECT_EQ(*scale_inv.data<float>(), 1.0f / expected_scale);
    }
  }
}

TEST(CpuQuantize, CodesEqualIndependentEncodingIncludingSaturation) {
  // The per-tensor scale is doubled so that the largest values land beyond the format's max.
  for (DType in : {DType::F32, DType::BF16, DType::F16}) {
    for (DType fmt : {DType::E4M3, DType::E5M2}) {
      for (Fp8Saturation sat : {Fp8Saturation::Saturate, Fp8Saturation::NoSaturate}) {
        const Tensor x = random_tensor({19, 40}, in, 3);
        float amax = 0;
        for (int64_t i = 0; i < x.numel(); ++i) amax = std::max(amax, std::fabs(load(x, i)));
        const float scale_value = 2.0f * (fmt_max(fmt) / amax);
        Tensor codes = Tensor::empty(cpu(), x.shape(), fmt);
        cpu::quantize_per_tensor(x, scalar_f32(scale_value), sat, codes);
        int64_t beyond_max = 0;
        for (int64_t i = 0; i < x.numel(); ++i) {
          const float scaled = load(x, i) * scale_value;
          const uint8_t code = codes.data<uint8_t>()[i];
          ASSERT_EQ(code, encode(fmt, scaled, sat)) << "element " << i;
          if (std::fabs(scaled) >
              fmt_max(fmt) * 1.07f) {  // clearly past the overflow threshold (max + half ulp)
            ++beyond_max;
            const float back = decode(fmt, code);
            if (sat == Fp8Saturation::Saturate) {
              EXPECT_EQ(std::fabs(back), fmt_max(fmt));
              EXPECT_EQ(std::signbit(back), std::signbit(scaled));
            } else if (fmt == DType::E4M3) {
              EXPECT_TRUE(std::isnan(back));  // E4M3 has no infinity
            } else {
              EXPECT_TRUE(std::isinf(back));
            }
          }
        }
        EXPECT_GT(beyond_max, 0);
      }
    }
  }
}

TEST(CpuQuantize, DequantizeRoundsToBf16AndF16) {
  const Tensor x = random_tensor({9, 32}, DType::F32, 4);
  Tensor codes = Tensor::empty(cpu(), x.shape(), DType::E4M3);
  cpu::quantize_per_tensor(x, scalar_f32(3.0f), Fp8Saturation::Saturate, codes);
  const float scale_inv = 1.0f / 3.0f;
  for (DType out_dtype : {DType::BF16, DType::F16}) {
    Tensor out = Tensor::empty(cpu(), x.shape(), out_dtype);
    cpu::dequantize_per_tensor(codes, scalar_f32(scale_inv), out);
    for (int64_t i = 0; i < x.numel(); ++i) {
      const float v = e4m3_to_float(codes.data<uint8_t>()[i]) * scale_inv;
      const uint16_t expected = out_dtype == DType::BF16 ? float_to_bf16(v) : float_to_f16(v);
      ASSERT_EQ(out.data<uint16_t>()[i], expected) << "element " << i;
    }
  }
}

TEST(CpuQuantize, ComputeScaleEdgeCases) {
  const auto scales_of = [](float amax_value, DType fmt) {
    Tensor scale = scalar_f32(0), scale_inv = scalar_f32(0);
    cpu::compute_scale(scalar_f32(amax_value), fmt, scale, scale_inv);
    return std::pair<float, float>{*scale.data<float>(), *scale_inv.data<float>()};
  };
  EXPECT_EQ(scales_of(0.0f, DType::E4M3), (std::pair<float, float>{1.0f, 1.0f}));
  EXPECT_EQ(scales_of(448.0f, DType::E4M3), (std::pair<float, float>{1.0f, 1.0f}));
  EXPECT_EQ(scales_of(57344.0f, DType::E5M2), (std::pair<float, float>{1.0f, 1.0f}));
  // A non-finite amax must not be hidden: both scales are NaN (the canonical 0x7FFFFFFF).
  for (float bad : {std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
    const auto [s, si] = scales_of(bad, DType::E4M3);
    EXPECT_EQ(std::bit_cast<uint32_t>(s), 0x7FFFFFFFu);
    EXPECT_EQ(std::bit_cast<uint32_t>(si), 0x7FFFFFFFu);
  }
  // 448 / 1e-45 overflows: the scale is clamped to FLT_MAX so that zeros stay zeros.
  const auto [s, si] = scales_of(1e-45f, DType::E4M3);
  EXPECT_EQ(s, std::numeric_limits<float>::max());
  EXPECT_EQ(si, 1.0f / std::numeric_limits<float>::max());
}

TEST(CpuQuantize, TensorAmaxPropagatesNanAndInf) {
  Tensor x = random_tensor({100}, DType::F32, 5);
  Tensor amax = scalar_f32(0);
  x.data<float>()[17] = -std::numeric_limits<float>::infinity();
  cpu::tensor_amax(x, amax);
  EXPECT_EQ(*amax.data<float>(), std::numeric_limits<float>::infinity());
  x.data<float>()[60] = -std::numeric_limits<float>::quiet_NaN();
  cpu::tensor_amax(x, amax);
  EXPECT_EQ(std::bit_cast<uint32_t>(*amax.data<float>()), 0x7FFFFFFFu);
}

TEST(CpuQuantize, QuantizeTransposeEqualsQuantizeThenTranspose) {
  for (const Shape& shape : {Shape{1, 1}, Shape{63, 65}, Shape{64, 128}, Shape{130, 7}, Shape{3, 200}}) {
    for (DType fmt : {DType::E4M3, DType::E5M2}) {
      const Tensor x = random_tensor(shape, DType::BF16, 6);
      const Tensor scale = scalar_f32(5.5f);
      Tensor codes = Tensor::empty(cpu(), shape, fmt),
             codes_t = Tensor::empty(cpu(), {shape[1], shape[0]}, fmt);
      Tensor reference = Tensor::empty(cpu(), shape, fmt);
      cpu::quantize_transpose_per_tensor(x, scale, Fp8Saturation::Saturate, codes, codes_t);
      cpu::quantize_per_tensor(x, scale, Fp8Saturation::Saturate, reference);
      ASSERT_EQ(std::memcmp(codes.data_ptr(), reference.data_ptr(), reference.nbytes()), 0);
      for (int64_t r = 0; r < shape[0]; ++r) {
        for (int64_t c = 0; c < shape[1]; ++c) {
          ASSERT_EQ(codes_t.data<uint8_t>()[c * shape[0] + r], reference.data<uint8_t>()[r * shape[1] + c])
              << "shape " << shape_str(shape) << " at (" << r << "," << c << ")";
        }
      }
    }
  }
}

// ---- per group ----

TEST(CpuQuantize, PerGroupCodesScalesAndRoundTrip) {
  for (int64_t group : {16, 32, 128, 48}) {
    for (DType in : {DType::F32, DType::BF16}) {
      for (DType fmt : {DType::E4M3, DType::E5M2}) {
        const Shape shape{6, 384};
        const Tensor x = random_tensor(shape, in, 7 + static_cast<uint32_t>(group));
        const int64_t groups = x.numel() / group;
        Tensor codes = Tensor::empty(cpu(), shape, fmt);
        Tensor scale_inv = Tensor::empty(cpu(), {6, 384 / group}, DType::F32);
        Tensor amax = Tensor::empty(cpu(), {6, 384 / group}, DType::F32);
        cpu::quantize_per_group(x, group, Fp8Saturation::Saturate, codes, scale_inv);
        cpu::group_amax(x, group, amax);
        std::vector<float> scales(groups);
        for (int64_t g = 0; g < groups; ++g) {
          float expected_amax = 0;
          for (int64_t j = 0; j < group; ++j)
            expected_amax = std::max(expected_amax, std::fabs(load(x, g * group + j)));
          ASSERT_EQ(amax.data<float>()[g], expected_amax);
          scales[g] = fmt_max(fmt) / expected_amax;
          ASSERT_EQ(scale_inv.data<float>()[g], 1.0f / scales[g]) << "group " << g;
          for (int64_t j = 0; j < group; ++j) {
            const int64_t i = g * group + j;
            ASSERT_EQ(codes.data<uint8_t>()[i], encode(fmt, load(x, i) * scales[g], Fp8Saturation::Saturate))
                << "group size " << group << " element " << i;
          }
        }
        Tensor deq = Tensor::empty(cpu(), shape, DType::F32);
        cpu::dequantize_per_group(codes, scale_inv, group, deq);
        expect_round_trip_within_bound(x, deq, scales, group, fmt);
      }
    }
  }
}

TEST(CpuQuantize, GroupAmaxPropagatesNanAndInf) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  Tensor x = random_tensor({2, 64}, DType::F32, 8);  // 8 groups of 16
  float* xp = x.data<float>();
  xp[16 + 3] = nan;   // group 1
  xp[32 + 15] = inf;  // group 2
  xp[48 + 0] = -inf;  // group 3
  xp[80 + 2] = -inf;  // group 5: inf and NaN together give NaN
  xp[80 + 9] = -nan;
  Tensor amax = Tensor::empty(cpu(), {2, 4}, DType::F32);
  cpu::group_amax(x, 16, amax);
  const float* a = amax.data<float>();
  EXPECT_TRUE(std::isnan(a[1]));
  EXPECT_EQ(a[2], inf);
  EXPECT_EQ(a[3], inf);
  EXPECT_TRUE(std::isnan(a[5]));
  for (int g : {0, 4, 6, 7}) EXPECT_TRUE(std::isfinite(a[g])) << "group " << g;

  // Quantizing such groups gives NaN scales and NaN codes there, and leaves the other groups alone.
  Tensor codes = Tensor::empty(cpu(), {2, 64}, DType::E4M3);
  Tensor scale_inv = Tensor::empty(cpu(), {2, 4}, DType::F32);
  cpu::quantize_per_group(x, 16, Fp8Saturation::Saturate, codes, scale_inv);
  for (int g : {1, 2, 3, 5}) {
    EXPECT_TRUE(std::isnan(scale_inv.data<float>()[g])) << "group " << g;
    for (int j = 0; j < 16; ++j) EXPECT_TRUE(std::isnan(e4m3_to_float(codes.data<uint8_t>()[g * 16 + j])));
  }
  for (int g : {0, 4, 6, 7}) EXPECT_TRUE(std::isfinite(scale_inv.data<float>()[g])) << "group " << g;
}

TEST(CpuQuantize, AllZeroGroupHasUnitScaleAndZeroCodes) {
  Tensor x = random_tensor({3, 32}, DType::BF16, 9);
  for (int j = 32; j < 48; ++j) store(x, j, (j % 2) ? -0.0f : 0.0f);  // group 2 of 16, signed zeros
  Tensor codes = Tensor::empty(cpu(), x.shape(), DType::E5M2);
  Tensor scale_inv = Tensor::empty(cpu(), {3, 2}, DType::F32);
  cpu::quantize_per_group(x, 16, Fp8Saturation::Saturate, codes, scale_inv);
  EXPECT_EQ(scale_inv.data<float>()[2], 1.0f);
  for (int j = 32; j < 48; ++j) {
    EXPECT_EQ(codes.data<uint8_t>()[j] & 0x7F, 0) << "element " << j;  // +0 or -0
  }
  Tensor deq = Tensor::empty(cpu(), x.shape(), DType::F32);
  cpu::dequantize_per_group(codes, scale_inv, 16, deq);
  for (int j = 32; j < 48; ++j) EXPECT_EQ(deq.data<float>()[j], 0.0f);
}

// ---- argument checks ----

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "<no InvalidArgument thrown>";
}

TEST(CpuQuantize, RejectsGroupSizeThatDoesNotDivideLastDim) {
  const Tensor x = random_tensor({4, 100}, DType::F32, 10);
  Tensor codes = Tensor::empty(cpu(), x.shape(), DType::E4M3);
  Tensor scale_inv = Tensor::empty(cpu(), {4, 6}, DType::F32);
  const std::string msg =
      message_of([&] { cpu::quantize_per_group(x, 16, Fp8Saturation::Saturate, codes, scale_inv); });
  EXPECT_NE(msg.find("[quantize_per_group]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("group_size 16 does not divide the last dimension 100"), std::string::npos) << msg;
  EXPECT_NE(message_of([&] { cpu::group_amax(x, 16, scale_inv); }).find("[group_amax]"), std::string::npos);
  Tensor out = Tensor::empty(cpu(), x.shape(), DType::F32);
  EXPECT_NE(message_of([&] { cpu::dequantize_per_group(codes, scale_inv, 16, out); }).find("does not divide"),
            std::string::npos);
}

TEST(CpuQuantize, RejectsBadDtypesShapesAndLayouts) {
  const Tensor x = random_tensor({8, 32}, DType::F32, 11);
  const Tensor scale = scalar_f32(1.0f);
  Tensor not_fp8 = Tensor::empty(cpu(), x.shape(), DType::U8);
  EXPECT_NE(message_of([&] {
              cpu::quantize_per_tensor(x, scale, Fp8Saturation::Saturate, not_fp8);
            }).find("is not an FP8 format"),
            std::string::npos);
  Tensor wrong_shape = Tensor::empty(cpu(), {8, 16}, DType::E4M3);
  EXPECT_NE(message_of([&] {
              cpu::quantize_per_tensor(x, scale, Fp8Saturation::Saturate, wrong_shape);
            }).find("does not match"),
            std::string::npos);
  const Tensor transposed = x.transpose(0, 1);
  Tensor codes_t = Tensor::empty(cpu(), transposed.shape(), DType::E4M3);
  EXPECT_NE(message_of([&] {
              cpu::quantize_per_tensor(transposed, scale, Fp8Saturation::Saturate, codes_t);
            }).find("must be contiguous"),
            std::string::npos);
  const Tensor ints = Tensor::empty(cpu(), x.shape(), DType::I32);
  Tensor codes = Tensor::empty(cpu(), x.shape(), DType::E4M3);
  EXPECT_NE(message_of([&] {
              cpu::quantize_per_tensor(ints, scale, Fp8Saturation::Saturate, codes);
            }).find("input dtype i32"),
            std::string::npos);
  Tensor two = Tensor::empty(cpu(), {2}, DType::F32);
  EXPECT_NE(message_of([&] {
              cpu::quantize_per_tensor(x, two, Fp8Saturation::Saturate, codes);
            }).find("one-element f32"),
            std::string::npos);
  Tensor s = scalar_f32(0), si = scalar_f32(0);
  EXPECT_NE(message_of([&] { cpu::compute_scale(scale, DType::BF16, s, si); }).find("[compute_scale]"),
            std::string::npos);
  Tensor bad_t = Tensor::empty(cpu(), {8, 32}, DType::E4M3);
  EXPECT_NE(message_of([&] {
              cpu::quantize_transpose_per_tensor(x, scale, Fp8Saturation::Saturate, codes, bad_t);
            }).find("transposed codes"),
            std::string::npos);
}

}  // namespace
}  // namespace coat
