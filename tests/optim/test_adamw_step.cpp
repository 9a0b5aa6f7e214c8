// ops::adamw_step against a double-precision reference of torch.optim.AdamW's formula, the documented float
// operation order, bias correction, weight decay and argument checks.
#include <gtest/gtest.h>

#include <cfloat>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include "coat/core/error.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/optimizer.h"
#include "coat/ops/runtime.h"
#include "expect_error.h"

namespace coat {
namespace {

ContextPtr cpu() { return ops::make_context(Device::cpu()); }

std::vector<double> normal_values(size_t n, uint32_t seed, double stddev) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist(0.0, stddev);
  std::vector<double> v(n);
  for (double& x : v) x = static_cast<float>(dist(gen));  // representable in float
  return v;
}

// torch.optim.AdamW for one element, in double, from the float hyperparameters. Also carries the magnitude
// scales the float rounding errors are proportional to (no cancellation in them):
//   m_mag = b1 m_mag + (1 - b1) |g|,  p_mag = |p0| + sum of |decay term| + sum of |update|.
struct Reference {
  double p, m = 0.0, v = 0.0, m_mag = 0.0, p_mag;
  explicit Reference(double p0) : p(p0), p_mag(std::fabs(p0)) {}

  void step(double grad, const ops::AdamWHyper& h) {
    const double lr = h.lr, b1 = h.beta1, b2 = h.beta2, eps = h.eps, wd = h.weight_decay;
    const double t = static_cast<double>(h.step);
    const double g = grad * static_cast<double>(h.grad_scale);
    p_mag += std::fabs(p * lr * wd);
    p *= 1.0 - lr * wd;
    m = b1 * m + (1.0 - b1) * g;
    v = b2 * v + (1.0 - b2) * g * g;
    m_mag = b1 * m_mag + (1.0 - b1) * std::fabs(g);
    const double denom = std::sqrt(v / (1.0 - std::pow(b2, t))) + eps;
    p -= lr * (m / (1.0 - std::pow(b1, t))) / denom;
    p_mag += lr * (m_mag / (1.0 - std::pow(b1, t))) / denom;
  }
};

struct Buffers {
  Tensor p, g, m, v;
};

Buffers make_buffers(const ContextPtr& ctx, const std::vector<double>& p0) {
  const int64_t n = static_cast<int64_t>(p0.size());
  return {ops::from_vector(ctx, {n}, DType::F32, p0), ops::zeros(ctx, {n}, DType::F32),
          ops::zeros(ctx, {n}, DType::F32), ops::zeros(ctx, {n}, DType::F32)};
}

// Tolerance: kUlps float epsilons relative to the magnitude of the terms that produced each value (a few
// roundings per step, accumulated over the steps; see Reference). Observed worst case is reported by the
// test on failure.
constexpr double kUlps = 8.0;
constexpr double kFloatEps = FLT_EPSILON;  // 2^-23, one ulp at 1

TEST(AdamWStep, MatchesDoubleReferenceOverSeveralSteps) {
  auto ctx = cpu();
  const size_t n = 4096;
  const std::vector<double> p0 = normal_values(n, 11, 0.02);
  Buffers b = make_buffers(ctx, p0);
  std::vector<Reference> ref;
  for (double x : p0) ref.emplace_back(x);

  ops::AdamWHyper h;
  h.lr = 1e-3f;
  h.beta1 = 0.9f;
  h.beta2 = 0.95f;
  h.eps = 1e-8f;
  h.weight_decay = 0.1f;
  double worst_p = 0.0, worst_m = 0.0, worst_v = 0.0;
  for (int64_t t = 1; t <= 6; ++t) {
    // Gradients of very different sizes, including some tiny ones (eps matters there) and sign changes.
    std::vector<double> g = normal_values(n, static_cast<uint32_t>(100 + t), 1.0);
    for (size_t i = 0; i < n; i += 7) g[i] *= 1e-7;
    for (size_t i = 3; i < n; i += 11) g[i] *= 50.0;
    b.g = ops::from_vector(ctx, {static_cast<int64_t>(n)}, DType::F32, g);
    h.step = t;
    h.grad_scale = t == 4 ? 0.37f : 1.0f;
    ops::adamw_step(b.p, b.g, b.m, b.v, h);
    for (size_t i = 0; i < n; ++i) ref[i].step(g[i], h);

    const std::vector<double> p = ops::to_double_vector(b.p), m = ops::to_double_vector(b.m),
                              v = ops::to_double_vector(b.v);
    for (size_t i = 0; i < n; ++i) {
      const double tol_p = kUlps * kFloatEps * ref[i].p_mag;
      const double tol_m = kUlps * kFloatEps * ref[i].m_mag;
      const double tol_v = kUlps * kFloatEps * ref[i].v;  // v: sums of non-negative terms
      worst_p = std::max(worst_p, std::fabs(p[i] - ref[i].p) / (kFloatEps * ref[i].p_mag));
      worst_m = std::max(worst_m, std::fabs(m[i] - ref[i].m) / (kFloatEps * ref[i].m_mag));
      if (ref[i].v > 0) worst_v = std::max(worst_v, std::fabs(v[i] - ref[i].v) / (kFloatEps * ref[i].v));
      ASSERT_LE(std::fabs(p[i] - ref[i].p), tol_p) << "step " << t << " element " << i;
      ASSERT_LE(std::fabs(m[i] - ref[i].m), tol_m) << "step " << t << " element " << i;
      ASSERT_LE(std::fabs(v[i] - ref[i].v), tol_v) << "step " << t << " element " << i;
    }
  }
  std::printf("worst error in float epsilons of the term magnitudes: p %.3f, m %.3f, v %.3f\n", worst_p,
              worst_m, worst_v);
}

// The kernel runs exactly the operation order documented in coat/backend/cpu/optimizer.h (this file is
// also built with -ffp-contract=off).
TEST(AdamWStep, FollowsTheDocumentedFloatOrderBitwise) {
  auto ctx = cpu();
  const size_t n = 1000;
  const std::vector<double> p0 = normal_values(n, 5, 0.5);
  Buffers b = make_buffers(ctx, p0);
  std::vector<float> p(p0.begin(), p0.end()), m(n, 0.0f), v(n, 0.0f);
  ops::AdamWHyper h{3e-4f, 0.9f, 0.999f, 1e-6f, 0.01f, 1, 0.5f};
  for (int64_t t = 1; t <= 3; ++t) {
    const std::vector<double> g = normal_values(n, static_cast<uint32_t>(7 + t), 0.1);
    b.g = ops::from_vector(ctx, {static_cast<int64_t>(n)}, DType::F32, g);
    h.step = t;
    ops::adamw_step(b.p, b.g, b.m, b.v, h);
    const double lr = h.lr;
    const float decay = static_cast<float>(1.0 - lr * static_cast<double>(h.weight_decay));
    const float omb1 = static_cast<float>(1.0 - static_cast<double>(h.beta1));
    const float omb2 = static_cast<float>(1.0 - static_cast<double>(h.beta2));
    const float bias2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(static_cast<double>(h.beta2), t)));
    const float step_size = static_cast<float>(lr / (1.0 - std::pow(static_cast<double>(h.beta1), t)));
    for (size_t i = 0; i < n; ++i) {
      const float gi = static_cast<float>(g[i]) * h.grad_scale;
      const float pd = p[i] * decay;
      m[i] = h.beta1 * m[i] + omb1 * gi;
      v[i] = h.beta2 * v[i] + omb2 * (gi * gi);
      const float d = std::sqrt(v[i]) / bias2_sqrt + h.eps;
      p[i] = pd - step_size * (m[i] / d);
    }
  }
  const std::vector<double> pk = ops::to_double_vector(b.p), mk = ops::to_double_vector(b.m),
                            vk = ops::to_double_vector(b.v);
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(static_cast<float>(pk[i]), p[i]) << i;
    ASSERT_EQ(static_cast<float>(mk[i]), m[i]) << i;
    ASSERT_EQ(static_cast<float>(vk[i]), v[i]) << i;
  }
}

// With bias correction the first update of a constant gradient has magnitude lr (m_hat = g, v_hat = g^2),
// and so do the following ones; without it the first would be lr * 0.1 / sqrt(0.001) ~ 3.2 lr.
TEST(AdamWStep, BiasCorrectionGivesUpdatesOfSizeLr) {
  auto ctx = cpu();
  const std::vector<double> p0 = {1.0, -2.0, 0.5, 0.0};
  const std::vector<double> g = {0.5, -3.0, 1e-3, 20.0};
  Buffers b = make_buffers(ctx, p0);
  b.g = ops::from_vector(ctx, {4}, DType::F32, g);
  ops::AdamWHyper h{1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f, 1, 1.0f};
  std::vector<double> prev = p0;
  for (int64_t t = 1; t <= 5; ++t) {
    h.step = t;
    ops::adamw_step(b.p, b.g, b.m, b.v, h);
    const std::vector<double> p = ops::to_double_vector(b.p);
    for (size_t i = 0; i < p0.size(); ++i) {
      const double update = prev[i] - p[i];
      EXPECT_GT(update * g[i], 0.0) << "moves against the gradient";
      // eps / |g| <= 1e-5 relative, float roundings ~1e-6 of p
      EXPECT_NEAR(std::fabs(update), 1e-2, 1e-2 * 2e-5 + 4 * kFloatEps * std::fabs(p0[i]) + 1e-9)
          << "step " << t << " element " << i;
    }
    prev = p;
  }
}

TEST(AdamWStep, WeightDecayOnlyWhenAsked) {
  auto ctx = cpu();
  const std::vector<double> p0 = {1.0, -2.0, 0.25};
  ops::AdamWHyper h{0.1f, 0.9f, 0.999f, 1e-8f, 0.0f, 1, 1.0f};
  // Zero gradient: m = v = 0 and the Adam term is 0 / eps = 0, leaving only the decoupled decay.
  Buffers no_decay = make_buffers(ctx, p0);
  ops::adamw_step(no_decay.p, no_decay.g, no_decay.m, no_decay.v, h);
  EXPECT_EQ(ops::to_double_vector(no_decay.p), p0);

  h.weight_decay = 0.5f;
  Buffers decay = make_buffers(ctx, p0);
  ops::adamw_step(decay.p, decay.g, decay.m, decay.v, h);
  const float factor = static_cast<float>(1.0 - static_cast<double>(0.1f) * 0.5);  // float lr, wd; in double
  const std::vector<double> p = ops::to_double_vector(decay.p);
  for (size_t i = 0; i < p0.size(); ++i) EXPECT_EQ(static_cast<float>(p[i]), static_cast<float>(p0[i]) * factor);
  EXPECT_NEAR(p[0], 0.95, 1e-7);
}

TEST(AdamWStep, EmptyTensorsAreANoOp) {
  auto ctx = cpu();
  Buffers b = make_buffers(ctx, {});
  ops::adamw_step(b.p, b.g, b.m, b.v, ops::AdamWHyper{1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 1, 1.0f});
  EXPECT_EQ(b.p.numel(), 0);
}

TEST(AdamWStep, RejectsInvalidArguments) {
  auto ctx = cpu();
  Buffers b = make_buffers(ctx, {1.0, 2.0});
  const ops::AdamWHyper good{1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 1, 1.0f};
  Tensor short_g = ops::zeros(ctx, {3}, DType::F32);
  test::expect_error_containing<InvalidArgument>([&] { ops::adamw_step(b.p, short_g, b.m, b.v, good); }, "[adamw_step] grad has 3 elements");
  Tensor bf16_m = ops::zeros(ctx, {2}, DType::BF16);
  test::expect_error_containing<InvalidArgument>([&] { ops::adamw_step(b.p, b.g, bf16_m, b.v, good); }, "exp_avg (m) has dtype bf16");
  Tensor strided = ops::zeros(ctx, {4}, DType::F32).slice(0, 0, 4, 2);
  test::expect_error_containing<InvalidArgument>([&] { ops::adamw_step(b.p, b.g, b.m, strided, good); }, "must be contiguous");
  ops::AdamWHyper bad = good;
  bad.step = 0;
  test::expect_error_containing<InvalidArgument>([&] { ops::adamw_step(b.p, b.g, b.m, b.v, bad); }, "step 0 must be >= 1");
  bad = good;
  bad.beta2 = 1.0f;
  test::expect_error_containing<InvalidArgument>([&] { ops::adamw_step(b.p, b.g, b.m, b.v, bad); }, "beta2");
  bad = good;
  bad.lr = NAN;
  test::expect_error_containing<InvalidArgument>([&] { ops::adamw_step(b.p, b.g, b.m, b.v, bad); }, "lr");
}

}  // namespace
}  // namespace coat
