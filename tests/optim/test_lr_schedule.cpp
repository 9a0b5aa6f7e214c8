// LrSchedule: warmup, constant / linear / cosine decay, clamping, parsing and validation.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "coat/core/error.h"
#include "coat/optim/lr_schedule.h"
#include "expect_error.h"

namespace coat {
namespace {

using optim::LrSchedule;

TEST(LrSchedule, WarmupRisesLinearlyFromZeroToPeak) {
  const LrSchedule s{LrSchedule::Cosine, 1e-3f, 100, 1000, 0.1f};
  EXPECT_FLOAT_EQ(s.lr_at(1), 1e-5f);
  EXPECT_FLOAT_EQ(s.lr_at(50), 5e-4f);
  EXPECT_EQ(s.lr_at(100), 1e-3f);  // the warmup boundary is exactly peak
  EXPECT_LT(s.lr_at(101), 1e-3f);  // and decay starts right after
  EXPECT_GT(s.lr_at(101), 0.9999f * 1e-3f);
}

TEST(LrSchedule, CosineHalfWayAndEnd) {
  const LrSchedule s{LrSchedule::Cosine, 1e-3f, 100, 1100, 0.1f};
  const float min_lr = 1e-4f;
  EXPECT_FLOAT_EQ(s.lr_at(600), (1e-3f + min_lr) / 2);  // progress 0.5
  EXPECT_FLOAT_EQ(s.lr_at(350), min_lr + (1e-3f - min_lr) * 0.5f * (1.0f + std::sqrt(0.5f)));  // progress 1/4
  EXPECT_FLOAT_EQ(s.lr_at(1100), min_lr);
  EXPECT_FLOAT_EQ(s.lr_at(5000), min_lr);  // clamped after total_steps
  for (int64_t t = 101; t <= 1100; ++t) EXPECT_LE(s.lr_at(t), s.lr_at(t - 1)) << t;
}

TEST(LrSchedule, LinearDecay) {
  const LrSchedule s{LrSchedule::Linear, 2e-3f, 10, 110, 0.0f};
  EXPECT_EQ(s.lr_at(10), 2e-3f);
  EXPECT_FLOAT_EQ(s.lr_at(35), 1.5e-3f);
  EXPECT_FLOAT_EQ(s.lr_at(60), 1e-3f);  // half way: (peak + min) / 2
  EXPECT_EQ(s.lr_at(110), 0.0f);
  EXPECT_EQ(s.lr_at(111), 0.0f);
}

TEST(LrSchedule, ConstantAndNoWarmup) {
  const LrSchedule c{LrSchedule::Constant, 3e-4f, 5, 0, 0.0f};
  EXPECT_FLOAT_EQ(c.lr_at(1), 3e-4f / 5);
  EXPECT_EQ(c.lr_at(5), 3e-4f);
  EXPECT_EQ(c.lr_at(6), 3e-4f);
  EXPECT_EQ(c.lr_at(1000000), 3e-4f);
  const LrSchedule nw{LrSchedule::Cosine, 1e-3f, 0, 100, 0.5f};
  EXPECT_FLOAT_EQ(nw.lr_at(50), 0.75e-3f);
  EXPECT_LT(nw.lr_at(1), 1e-3f);
  EXPECT_FLOAT_EQ(nw.lr_at(100), 0.5e-3f);
  // Decay that ends with the warmup: min right after.
  const LrSchedule abrupt{LrSchedule::Linear, 1e-3f, 10, 10, 0.2f};
  EXPECT_EQ(abrupt.lr_at(10), 1e-3f);
  EXPECT_FLOAT_EQ(abrupt.lr_at(11), 2e-4f);
}

TEST(LrSchedule, ParseKindAndValidation) {
  EXPECT_EQ(LrSchedule::parse_kind("constant"), LrSchedule::Constant);
  EXPECT_EQ(LrSchedule::parse_kind("linear"), LrSchedule::Linear);
  EXPECT_EQ(LrSchedule::parse_kind("cosine"), LrSchedule::Cosine);
  EXPECT_EQ(LrSchedule::kind_name(LrSchedule::Cosine), "cosine");
  test::expect_error_containing<InvalidArgument>([] { LrSchedule::parse_kind("cosin"); }, "unknown schedule 'cosin'; valid: constant, linear, cosine");
  test::expect_error_containing<InvalidArgument>([] { LrSchedule::parse_kind("Cosine"); }, "valid: constant, linear, cosine");

  const LrSchedule s{LrSchedule::Cosine, 1e-3f, 10, 100, 0.1f};
  test::expect_error_containing<InvalidArgument>([&] { s.lr_at(0); }, "step 0 must be >= 1");
  test::expect_error_containing<InvalidArgument>([] { LrSchedule{LrSchedule::Cosine, 1e-3f, 10, 5, 0.1f}.lr_at(1); },
                 "cosine decay needs total_steps (5) >= warmup_steps (10)");
  test::expect_error_containing<InvalidArgument>([] { LrSchedule{LrSchedule::Linear, 1e-3f, 0, 5, 1.5f}.validate(); }, "min_lr_ratio");
  test::expect_error_containing<InvalidArgument>([] { LrSchedule{LrSchedule::Linear, -1e-3f, 0, 5, 0.0f}.validate(); }, "peak_lr");
  test::expect_error_containing<InvalidArgument>([] { LrSchedule{LrSchedule::Constant, 1e-3f, -1, 0, 0.0f}.validate(); }, "warmup_steps");
  LrSchedule{LrSchedule::Constant, 1e-3f, 10, 0, 0.0f}.validate();  // Constant ignores total_steps
}

}  // namespace
}  // namespace coat
