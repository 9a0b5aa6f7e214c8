// RoPE op on the CPU: the HF rotate-half formula, inverse, positions offset, F64 finite-difference backward
// (the inverse rotation), F32/BF16 against F64, and argument errors.
#include <gtest/gtest.h>

#include "expect_error.h"
#include "finite_difference.h"

#include <cmath>

#include "coat/ops/copy.h"
#include "coat/ops/rope.h"
#include "coat/ops/runtime.h"

namespace coat {
namespace {

using test::random_values;

ContextPtr cpu() {
  return ops::make_context(Device::cpu());
}

constexpr double kTheta = 10000.0;

/// HF Llama: inv_freq_i = theta^(-2i/Dh), cos/sin of pos * inv_freq_i, y = x cos + rotate_half(x) sin.
std::vector<double> naive_rope(const std::vector<double>& x, int64_t b, int64_t t, int64_t h, int64_t dh,
                               double theta, int64_t offset) {
  std::vector<double> y(x.size());
  const int64_t half = dh / 2;
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t ti = 0; ti < t; ++ti)
      for (int64_t hi = 0; hi < h; ++hi)
        for (int64_t i = 0; i < dh; ++i) {
          const int64_t base = ((bi * t + ti) * h + hi) * dh;
          const int64_t f = i % half;
          const double angle = static_cast<double>(ti + offset) / std::pow(theta, 2.0 * f / dh);
          const double rotated = i < half ? -x[base + i + half] : x[base + i - half];
          y[base + i] = x[base + i] * std::cos(angle) + rotated * std::sin(angle);
        }
  return y;
}

TEST(RopeOps, ForwardMatchesRotateHalf) {
  auto ctx = cpu();
  const int64_t b = 2, t = 7, h = 3, dh = 8;
  const auto x = random_values(b * t * h * dh, 1);
  for (int64_t offset : {0, 5}) {
    const Tensor y = ops::rope(ops::from_vector(ctx, {b, t, h, dh}, DType::F64, x), kTheta, offset);
    EXPECT_EQ(y.shape(), Shape({b, t, h, dh}));
    test::expect_close(ops::to_double_vector(y), naive_rope(x, b, t, h, dh, kTheta, offset), 1e-13, 1e-14,
                       "rope offset " + std::to_string(offset));
  }
}

TEST(RopeOps, PositionZeroIsIdentity) {
  auto ctx = cpu();
  const auto x = random_values(2 * 1 * 2 * 4, 2);
  const Tensor y = ops::rope(ops::from_vector(ctx, {2, 1, 2, 4}, DType::F64, x), kTheta);
  EXPECT_EQ(ops::to_double_vector(y), x);
}

TEST(RopeOps, InverseUndoesRope) {
  auto ctx = cpu();
  const int64_t b = 2, t = 16, h = 4, dh = 16;
  const auto x = random_values(b * t * h * dh, 3);
  for (DType dt : {DType::F64, DType::F32}) {
    const Tensor tx = ops::from_vector(ctx, {b, t, h, dh}, dt, x);
    const Tensor back = ops::rope(ops::rope(tx, kTheta, 3), kTheta, 3, /*inverse=*/true);
    const double tol = dt == DType::F64 ? 1e-14 : 1e-6;
    test::expect_close(ops::to_double_vector(back), ops::to_double_vector(tx), tol, tol, "rope^-1 rope");
    // And the other way round.
    const Tensor fwd = ops::rope(ops::rope(tx, kTheta, 3, true), kTheta, 3);
    test::expect_close(ops::to_double_vector(fwd), ops::to_double_vector(tx), tol, tol, "rope rope^-1");
  }
}

TEST(RopeOps, OffsetContinuesTheSequence) {
  auto ctx = cpu();
  const int64_t b = 1, t = 10, h = 2, dh = 8;
  const Tensor x = ops::from_vector(ctx, {b, t, h, dh}, DType::F64, random_values(b * t * h * dh, 4));
  const Tensor full = ops::rope(x, kTheta);
  const Tensor tail = ops::rope(x.slice(1, 6, 10), kTheta, 6);  // a non-contiguous view
  EXPECT_EQ(ops::to_double_vector(tail), ops::to_double_vector(full.slice(1, 6, 10)));
}

TEST(RopeOps, BackwardIsInverseRotationByFiniteDifferences) {
  auto ctx = cpu();
  const int64_t b = 2, t = 5, h = 2, dh = 6;
  const int64_t n = b * t * h * dh;
  const auto x = random_values(n, 5);
  const auto proj = random_values(n, 6);
  auto loss = [&](const std::vector<double>& p) {
    return test::dot(proj, ops::to_double_vector(
                               ops::rope(ops::from_vector(ctx, {b, t, h, dh}, DType::F64, p), 500.0, 2)));
  };
  const Tensor dx = ops::rope(ops::from_vector(ctx, {b, t, h, dh}, DType::F64, proj), 500.0, 2, true);
  test::expect_close_normwise(ops::to_double_vector(dx), test::central_difference(loss, x), 1e-6, "rope dx");
}

// F32: rtol 1e-6 (float cos/sin table and products). BF16: one rounding of the output, rtol 2^-8.
TEST(RopeOps, LowPrecisionMatchesF64) {
  auto ctx = cpu();
  const int64_t b = 2, t = 64, h = 4, dh = 32;
  const auto x = random_values(b * t * h * dh, 7);
  for (DType dt : {DType::F32, DType::BF16}) {
    const Tensor xl = ops::from_vector(ctx, {b, t, h, dh}, dt, x);
    const Tensor y = ops::rope(xl, kTheta, 100);
    const Tensor y64 = ops::rope(ops::cast(xl, DType::F64), kTheta, 100);
    EXPECT_EQ(y.dtype(), dt);
    const double rtol = dt == DType::F32 ? 1e-6 : 1.0 / 256, atol = dt == DType::F32 ? 1e-6 : 1e-5;
    test::expect_close(ops::to_double_vector(y), ops::to_double_vector(y64), rtol, atol,
                       std::string(dtype_name(dt)) + " rope");
  }
}

// A packed [B, T, Hq + 2 Hkv, Dh] projection: rotary_heads = Hq + Hkv turns the q and k heads exactly as a
// rope of those heads alone would, and copies the v heads bit for bit.
TEST(RopeOps, RotaryHeadsTurnOnlyTheFirstHeads) {
  auto ctx = cpu();
  const int64_t b = 2, t = 6, h = 7, dh = 8, rotary = 5;
  for (DType dt : {DType::F64, DType::F32, DType::BF16}) {
    const Tensor x = ops::from_vector(ctx, {b, t, h, dh}, dt, random_values(b * t * h * dh, 11));
    for (bool inverse : {false, true}) {
      const std::string what = std::string(dtype_name(dt)) + (inverse ? " inverse" : "");
      const Tensor y = ops::rope(x, kTheta, 3, inverse, rotary);
      EXPECT_EQ(ops::to_bytes(y.slice(2, 0, rotary)),
                ops::to_bytes(ops::rope(x.slice(2, 0, rotary), kTheta, 3, inverse)))
          << what;
      EXPECT_EQ(ops::to_bytes(y.slice(2, rotary, h)), ops::to_bytes(x.slice(2, rotary, h))) << what;
      // rotary_heads = H is the default; 0 copies everything.
      EXPECT_EQ(ops::to_bytes(ops::rope(x, kTheta, 3, inverse, h)),
                ops::to_bytes(ops::rope(x, kTheta, 3, inverse)));
      EXPECT_EQ(ops::to_bytes(ops::rope(x, kTheta, 3, inverse, 0)), ops::to_bytes(x)) << what;
    }
  }
}

TEST(RopeOps, InPlaceEqualsOutOfPlace) {
  auto ctx = cpu();
  const int64_t b = 2, t = 5, h = 6, dh = 16;
  for (DType dt : {DType::F64, DType::F32, DType::BF16}) {
    const Tensor x = ops::from_vector(ctx, {b, t, h, dh}, dt, random_values(b * t * h * dh, 12));
    for (int64_t rotary : {int64_t{6}, int64_t{4}}) {
      for (bool inverse : {false, true}) {
        Tensor y = ops::clone(x);
        ops::rope_(y, kTheta, 2, inverse, rotary);
        EXPECT_EQ(ops::to_bytes(y), ops::to_bytes(ops::rope(x, kTheta, 2, inverse, rotary)))
            << dtype_name(dt) << " rotary " << rotary;
      }
    }
    // A non-contiguous view (every other position) is rotated through a copy, the rest left alone.
    Tensor big = ops::clone(x);
    Tensor view = big.slice(1, 0, t, 2);
    ops::rope_(view, kTheta, 0, false, 4);
    EXPECT_EQ(ops::to_bytes(big.slice(1, 0, t, 2)),
              ops::to_bytes(ops::rope(x.slice(1, 0, t, 2), kTheta, 0, false, 4)));
    EXPECT_EQ(ops::to_bytes(big.slice(1, 1, t, 2)), ops::to_bytes(x.slice(1, 1, t, 2)));
  }
}

TEST(RopeOps, ErrorsNameTheProblem) {
  auto ctx = cpu();
  const Tensor x = ops::from_vector(ctx, {1, 2, 2, 6}, DType::F32, random_values(24, 8));
  test::expect_error_containing(
      [&] {
        ops::rope(x.reshape({2, 2, 6}), kTheta);
      },
      "[rope] x has shape (2,2,6); expected [B, T, H, Dh]");
  test::expect_error_containing(
      [&] {
        ops::rope(x.reshape({1, 2, 4, 3}), kTheta);
      },
      "head dimension 3 of x (1,2,4,3) must be even");
  test::expect_error_containing([&] { ops::rope(x, 0.0); }, "theta 0 must be finite and > 0");
  test::expect_error_containing([&] { ops::rope(x, kTheta, -1); }, "position_offset -1 must be >= 0");
  test::expect_error_containing([&] { ops::rope(ops::cast(x, DType::F16), kTheta); },
                                "x has dtype f16; expected f32, f64 or bf16");
  test::expect_error_containing([&] { ops::rope(x, kTheta, 0, false, 3); },
                                "rotary_heads 3 must lie in [0, 2] for x (1,2,2,6)");
  Tensor y = ops::clone(x);
  test::expect_error_containing([&] { ops::rope_(y, kTheta, 0, false, -1); },
                                "rotary_heads -1 must lie in [0, 2]");
}

}  // namespace
}  // namespace coat
