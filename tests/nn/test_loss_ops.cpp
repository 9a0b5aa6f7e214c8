// Cross-entropy op on the CPU: naive loss and gradient, F64 finite differences, ignore_index rows,
// compute_grad = false, large logits, F32/BF16 against F64, target errors, and the sums kept as tensors
// (read once, added up across calls).
#include <gtest/gtest.h>

#include "expect_error.h"
#include "finite_difference.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/elementwise.h"
#include "coat/ops/loss.h"
#include "coat/ops/runtime.h"

namespace coat {
namespace {

using test::random_values;

ContextPtr cpu() {
  return ops::make_context(Device::cpu());
}

constexpr int64_t kIgnore = -100;

struct NaiveLoss {
  double loss = 0.0;
  int64_t count = 0;
  std::vector<double> dlogits;
};

NaiveLoss naive_cross_entropy(const std::vector<double>& x, const std::vector<double>& targets, int64_t vocab,
                              double grad_scale) {
  NaiveLoss r;
  r.dlogits.assign(x.size(), 0.0);
  for (size_t n = 0; n < targets.size(); ++n) {
    const auto t = static_cast<int64_t>(targets[n]);
    if (t == kIgnore) continue;
    const double* row = x.data() + n * vocab;
    const double m = *std::max_element(row, row + vocab);
    double sum = 0.0;
    for (int64_t j = 0; j < vocab; ++j) sum += std::exp(row[j] - m);
    const double lse = m + std::log(sum);
    r.loss += lse - row[t];
    ++r.count;
    for (int64_t j = 0; j < vocab; ++j)
      r.dlogits[n * vocab + j] = (std::exp(row[j] - lse) - (j == t ? 1.0 : 0.0)) * grad_scale;
  }
  return r;
}

TEST(LossOps, MatchesNaiveAndSkipsIgnoredRows) {
  auto ctx = cpu();
  const int64_t n = 6, vocab = 13;
  const auto x = random_values(n * vocab, 1, 3.0);
  const std::vector<double> targets{4, kIgnore, 0, 12, kIgnore, 7};
  for (DType it : {DType::I32, DType::I64}) {
    const ops::CrossEntropyResult r =
        ops::cross_entropy(ops::from_vector(ctx, {n, vocab}, DType::F64, x),
                           ops::from_vector(ctx, {n}, it, targets), kIgnore, 0.25);
    const NaiveLoss ref = naive_cross_entropy(x, targets, vocab, 0.25);
    EXPECT_EQ(r.read().count, 4);
    EXPECT_NEAR(r.read().loss_sum, ref.loss, 1e-13 * ref.loss);
    ASSERT_TRUE(r.dlogits.defined());
    EXPECT_EQ(r.dlogits.shape(), Shape({n, vocab}));
    const auto d = ops::to_double_vector(r.dlogits);
    test::expect_close(d, ref.dlogits, 1e-13, 1e-15, "dlogits");
    for (int64_t j = 0; j < vocab; ++j) {
      EXPECT_EQ(d[1 * vocab + j], 0.0);  // ignored rows
      EXPECT_EQ(d[4 * vocab + j], 0.0);
    }
  }
}

TEST(LossOps, GradientMatchesFiniteDifferences) {
  auto ctx = cpu();
  const int64_t n = 5, vocab = 9;
  const double grad_scale = 1.0 / 3.0;
  const auto x = random_values(n * vocab, 2, 2.0);
  const std::vector<double> targets{8, 0, kIgnore, 3, 3};
  const Tensor t = ops::from_vector(ctx, {n}, DType::I64, targets);
  auto loss = [&](const std::vector<double>& p) {
    return grad_scale *
           ops::cross_entropy(ops::from_vector(ctx, {n, vocab}, DType::F64, p), t, kIgnore, grad_scale, false)
               .read().loss_sum;
  };
  const ops::CrossEntropyResult r =
      ops::cross_entropy(ops::from_vector(ctx, {n, vocab}, DType::F64, x), t, kIgnore, grad_scale);
  test::expect_close_normwise(ops::to_double_vector(r.dlogits), test::central_difference(loss, x), 1e-6,
                              "dlogits");
}

TEST(LossOps, ComputeGradFalseGivesTheSameLoss) {
  auto ctx = cpu();
  const Tensor x = ops::from_vector(ctx, {4, 10}, DType::F32, random_values(40, 3));
  const Tensor t = ops::from_vector(ctx, {4}, DType::I32, std::vector<double>{1, 2, 3, kIgnore});
  const ops::CrossEntropyResult a = ops::cross_entropy(x, t, kIgnore, 1.0, true);
  const ops::CrossEntropyResult b = ops::cross_entropy(x, t, kIgnore, 1.0, false);
  EXPECT_FALSE(b.dlogits.defined());
  EXPECT_EQ(a.read().loss_sum, b.read().loss_sum);
  EXPECT_EQ(a.read().count, 3);
  EXPECT_EQ(b.read().count, 3);
}

TEST(LossOps, AllRowsIgnored) {
  auto ctx = cpu();
  const Tensor x = ops::from_vector(ctx, {2, 5}, DType::F32, random_values(10, 4));
  const Tensor t = ops::from_vector(ctx, {2}, DType::I64, std::vector<double>{kIgnore, kIgnore});
  const ops::CrossEntropyResult r = ops::cross_entropy(x, t, kIgnore, 1.0);
  EXPECT_EQ(r.read().count, 0);
  EXPECT_EQ(r.read().loss_sum, 0.0);
  for (double v : ops::to_double_vector(r.dlogits)) EXPECT_EQ(v, 0.0);
}

TEST(LossOps, LargeLogitsStayFinite) {
  auto ctx = cpu();
  const Tensor x = ops::from_vector(ctx, {1, 3}, DType::F32, std::vector<double>{1000.0, 999.0, -1000.0});
  const ops::CrossEntropyResult r =
      ops::cross_entropy(x, ops::from_vector(ctx, {1}, DType::I64, std::vector<double>{1}), kIgnore, 1.0);
  EXPECT_NEAR(r.read().loss_sum, std::log(1.0 + std::exp(1.0)), 1e-6);  // lse - 999 = 1 + log(1 + e^-1)
  for (double v : ops::to_double_vector(r.dlogits)) EXPECT_TRUE(std::isfinite(v));
}

TEST(LossOps, TakesLeadingDimensions) {
  auto ctx = cpu();
  const auto x = random_values(2 * 3 * 7, 5);
  const std::vector<double> targets{0, 1, 2, 3, 4, 5};
  const ops::CrossEntropyResult a =
      ops::cross_entropy(ops::from_vector(ctx, {2, 3, 7}, DType::F64, x),
                         ops::from_vector(ctx, {2, 3}, DType::I64, targets), kIgnore, 1.0);
  const ops::CrossEntropyResult b =
      ops::cross_entropy(ops::from_vector(ctx, {6, 7}, DType::F64, x),
                         ops::from_vector(ctx, {6}, DType::I64, targets), kIgnore, 1.0);
  EXPECT_EQ(a.read().loss_sum, b.read().loss_sum);
  EXPECT_EQ(a.dlogits.shape(), Shape({2, 3, 7}));
  EXPECT_EQ(ops::to_double_vector(a.dlogits), ops::to_double_vector(b.dlogits));
}

// F32 and BF16 logits against F64 on the same rounded values. Loss (accumulated in double from float
// exps): rtol 1e-6. dlogits F32: rtol 1e-5, atol 1e-7; BF16: one rounding, rtol 2^-8, atol 1e-6.
TEST(LossOps, LowPrecisionMatchesF64) {
  auto ctx = cpu();
  const int64_t n = 32, vocab = 500;
  const auto x = random_values(n * vocab, 6, 2.0);
  std::vector<double> targets(n);
  for (int64_t i = 0; i < n; ++i) targets[i] = static_cast<double>((i * 37) % vocab);
  targets[5] = kIgnore;
  const Tensor t = ops::from_vector(ctx, {n}, DType::I64, targets);
  for (DType dt : {DType::F32, DType::BF16}) {
    const Tensor xl = ops::from_vector(ctx, {n, vocab}, dt, x);
    const ops::CrossEntropyResult r = ops::cross_entropy(xl, t, kIgnore, 0.5);
    const ops::CrossEntropyResult r64 = ops::cross_entropy(ops::cast(xl, DType::F64), t, kIgnore, 0.5);
    EXPECT_EQ(r.dlogits.dtype(), dt);
    EXPECT_NEAR(r.read().loss_sum, r64.read().loss_sum, 1e-6 * r64.read().loss_sum) << dtype_name(dt);
    const bool bf16 = dt == DType::BF16;
    test::expect_close(ops::to_double_vector(r.dlogits), ops::to_double_vector(r64.dlogits),
                       bf16 ? 1.0 / 256 : 1e-5, bf16 ? 1e-6 : 1e-7, std::string(dtype_name(dt)) + " dlogits");
  }
}

TEST(LossOps, BadTargetsAreNamed) {
  auto ctx = cpu();
  const Tensor x = ops::from_vector(ctx, {3, 10}, DType::F32, random_values(30, 7));
  test::expect_error_containing(
      [&] {
        ops::cross_entropy(x, ops::from_vector(ctx, {3}, DType::I64, std::vector<double>{1, 12, 2}), kIgnore,
                           1.0);
      },
      "[cross_entropy] target 12 at position 1 is outside [0, V) with V = 10 and is not ignore_index (-100)");
  test::expect_error_containing(
      [&] {
        ops::cross_entropy(x, ops::from_vector(ctx, {3}, DType::I32, std::vector<double>{1, 2, -1}), kIgnore,
                           1.0);
      },
      "target -1 at position 2");
  test::expect_error_containing(
      [&] {
        ops::cross_entropy(x, ops::from_vector(ctx, {2}, DType::I64, std::vector<double>{1, 2}), kIgnore,
                           1.0);
      },
      "targets have shape (2); expected (3)");
  test::expect_error_containing(
      [&] {
        ops::cross_entropy(x, ops::from_vector(ctx, {3}, DType::F32, std::vector<double>{1, 2, 3}), kIgnore,
                           1.0);
      },
      "targets have dtype f32; expected i32 or i64");
  test::expect_error_containing(
      [&] {
        ops::cross_entropy(ops::cast(x, DType::F16),
                           ops::from_vector(ctx, {3}, DType::I64, std::vector<double>{1, 2, 3}), kIgnore,
                           1.0);
      },
      "logits have dtype f16; expected f32, f64 or bf16");
}

TEST(LossOps, SumsAreTensorsReadOnceAndAddUpAcrossCalls) {
  auto ctx = cpu();
  const Tensor x = ops::from_vector(ctx, {4, 9}, DType::F32, random_values(36, 8));
  const Tensor t1 = ops::from_vector(ctx, {4}, DType::I64, std::vector<double>{1, kIgnore, 8, 0});
  const Tensor t2 = ops::from_vector(ctx, {4}, DType::I32, std::vector<double>{3, 3, 3, kIgnore});
  const ops::CrossEntropyResult a = ops::cross_entropy(x, t1, kIgnore, 1.0);
  const ops::CrossEntropyResult b = ops::cross_entropy(x, t2, kIgnore, 1.0, false);
  EXPECT_EQ(a.loss_sum.dtype(), DType::F64);
  EXPECT_EQ(a.loss_sum.shape(), Shape({1}));
  EXPECT_EQ(a.count.dtype(), DType::F64);
  EXPECT_EQ(a.count.shape(), Shape({1}));
  EXPECT_EQ(ops::to_double_vector(a.loss_sum)[0], a.read().loss_sum);
  EXPECT_EQ(ops::to_double_vector(a.count)[0], 3.0);
  Tensor totals = ops::zeros(ctx, {3}, DType::F64);
  ops::add_(totals, a.totals());
  ops::add_(totals, b.totals());
  const ops::CrossEntropyValues sum = ops::read_totals(totals, 9, kIgnore);
  EXPECT_EQ(sum.loss_sum, (0.0 + a.read().loss_sum) + b.read().loss_sum);  // the host's order of additions
  EXPECT_EQ(sum.count, 6);
}

// The device reports a bad target through the sums; read() throws the CPU's message from them.
TEST(LossOps, ReadNamesABadTargetReportedInTheSums) {
  auto ctx = cpu();
  const Tensor x = ops::from_vector(ctx, {3, 10}, DType::F32, random_values(30, 9));
  ops::CrossEntropyResult r =
      ops::cross_entropy(x, ops::from_vector(ctx, {3}, DType::I64, std::vector<double>{1, 2, 3}), kIgnore, 1.0);
  ops::CrossEntropySums s{};
  std::memcpy(&s, r.sums.data_ptr(), sizeof s);
  EXPECT_EQ(s.bad_position, -1);
  EXPECT_EQ(s.bad_rows, 0.0);
  s.bad_rows = 1.0;
  s.bad_position = 1;
  s.bad_target = 12;
  std::memcpy(r.sums.data_ptr(), &s, sizeof s);
  test::expect_error_containing(
      [&] { r.read(); },
      "[cross_entropy] target 12 at position 1 is outside [0, V) with V = 10 and is not ignore_index (-100)");
  test::expect_error_containing([&] { ops::read_totals(r.totals(), 10, kIgnore); },
                                "1 targets are outside [0, V) with V = 10");
}

}  // namespace
}  // namespace coat
