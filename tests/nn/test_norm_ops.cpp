// RMSNorm and LayerNorm ops on the CPU: naive forward, F64 finite-difference backward, F32/BF16 against
// F64, accumulation into the weight gradient, and argument errors.
#include <gtest/gtest.h>

#include "expect_error.h"
#include "finite_difference.h"

#include <cmath>

#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/norm.h"
#include "coat/ops/runtime.h"

namespace coat {
namespace {

using test::random_values;

ContextPtr cpu() {
  return ops::make_context(Device::cpu());
}

constexpr double kEps = 1e-5;
// Central differences in F64 with h = 1e-6: truncation ~1e-12, rounding ~1e-10 relative to the loss.
constexpr double kFdTol = 1e-6;

struct NaiveNorm {
  std::vector<double> y, mean, rstd;
};

NaiveNorm naive_rmsnorm(const std::vector<double>& x, const std::vector<double>& w, int64_t n, int64_t d,
                        double eps) {
  NaiveNorm r;
  r.y.resize(x.size());
  for (int64_t i = 0; i < n; ++i) {
    double ss = 0.0;
    for (int64_t j = 0; j < d; ++j) ss += x[i * d + j] * x[i * d + j];
    const double rstd = 1.0 / std::sqrt(ss / d + eps);
    r.rstd.push_back(rstd);
    for (int64_t j = 0; j < d; ++j) r.y[i * d + j] = x[i * d + j] * rstd * (w.empty() ? 1.0 : w[j]);
  }
  return r;
}

NaiveNorm naive_layernorm(const std::vector<double>& x, int64_t n, int64_t d, double eps) {
  NaiveNorm r;
  r.y.resize(x.size());
  for (int64_t i = 0; i < n; ++i) {
    double mean = 0.0;
    for (int64_t j = 0; j < d; ++j) mean += x[i * d + j];
    mean /= d;
    double var = 0.0;
    for (int64_t j = 0; j < d; ++j) var += (x[i * d + j] - mean) * (x[i * d + j] - mean);
    var /= d;
    const double rstd = 1.0 / std::sqrt(var + eps);
    r.mean.push_back(mean);
    r.rstd.push_back(rstd);
    for (int64_t j = 0; j < d; ++j) r.y[i * d + j] = (x[i * d + j] - mean) * rstd;
  }
  return r;
}

TEST(NormOps, RmsNormForwardMatchesNaive) {
  auto ctx = cpu();
  const int64_t n = 6, d = 16;
  const auto x = random_values(n * d, 1, 2.0);
  const auto w = random_values(d, 2);
  for (bool affine : {true, false}) {
    const Tensor weight = affine ? ops::from_vector(ctx, {d}, DType::F64, w) : Tensor();
    const ops::NormForward f =
        ops::rmsnorm_forward(ops::from_vector(ctx, {n, d}, DType::F64, x), weight, kEps);
    const NaiveNorm ref = naive_rmsnorm(x, affine ? w : std::vector<double>{}, n, d, kEps);
    EXPECT_FALSE(f.mean.defined());
    EXPECT_EQ(f.rstd.dtype(), DType::F64);
    EXPECT_EQ(f.rstd.shape(), Shape({n}));
    test::expect_close(ops::to_double_vector(f.y), ref.y, 1e-13, 1e-14, "rmsnorm y");
    test::expect_close(ops::to_double_vector(f.rstd), ref.rstd, 1e-13, 0.0, "rmsnorm rstd");
  }
}

TEST(NormOps, RmsNormTakesLeadingDimensions) {
  auto ctx = cpu();
  const auto x = random_values(2 * 3 * 8, 3);
  const Tensor x3 = ops::from_vector(ctx, {2, 3, 8}, DType::F32, x);
  const ops::NormForward f3 = ops::rmsnorm_forward(x3, Tensor(), kEps);
  const ops::NormForward f2 = ops::rmsnorm_forward(x3.reshape({6, 8}), Tensor(), kEps);
  EXPECT_EQ(f3.y.shape(), Shape({2, 3, 8}));
  EXPECT_EQ(f3.rstd.shape(), Shape({6}));
  EXPECT_EQ(ops::to_double_vector(f3.y), ops::to_double_vector(f2.y));
}

TEST(NormOps, RmsNormBackwardMatchesFiniteDifferences) {
  auto ctx = cpu();
  const int64_t n = 4, d = 12;
  const auto x = random_values(n * d, 4, 1.5);
  const auto w = random_values(d, 5);
  const auto proj = random_values(n * d, 6);  // L = sum(proj * y)
  auto loss = [&](const std::vector<double>& p) {
    const auto parts = test::split(p, {static_cast<size_t>(n * d), static_cast<size_t>(d)});
    const ops::NormForward f = ops::rmsnorm_forward(ops::from_vector(ctx, {n, d}, DType::F64, parts[0]),
                                                    ops::from_vector(ctx, {d}, DType::F64, parts[1]), kEps);
    return test::dot(proj, ops::to_double_vector(f.y));
  };
  const std::vector<double> numeric = test::central_difference(loss, test::concat({x, w}));

  const Tensor tx = ops::from_vector(ctx, {n, d}, DType::F64, x);
  const Tensor tw = ops::from_vector(ctx, {d}, DType::F64, w);
  const ops::NormForward f = ops::rmsnorm_forward(tx, tw, kEps);
  Tensor dw = ops::zeros(ctx, {d}, DType::F64, MemoryCategory::Gradients);
  const Tensor dx =
      ops::rmsnorm_backward(ops::from_vector(ctx, {n, d}, DType::F64, proj), tx, tw, f.rstd, dw);
  const auto num = test::split(numeric, {static_cast<size_t>(n * d), static_cast<size_t>(d)});
  test::expect_close_normwise(ops::to_double_vector(dx), num[0], kFdTol, "rmsnorm dx");
  test::expect_close_normwise(ops::to_double_vector(dw), num[1], kFdTol, "rmsnorm dweight");
}

TEST(NormOps, RmsNormBackwardWithoutWeightMatchesFiniteDifferences) {
  auto ctx = cpu();
  const int64_t n = 3, d = 10;
  const auto x = random_values(n * d, 7);
  const auto proj = random_values(n * d, 8);
  auto loss = [&](const std::vector<double>& p) {
    return test::dot(
        proj, ops::to_double_vector(
                  ops::rmsnorm_forward(ops::from_vector(ctx, {n, d}, DType::F64, p), Tensor(), kEps).y));
  };
  const Tensor tx = ops::from_vector(ctx, {n, d}, DType::F64, x);
  const ops::NormForward f = ops::rmsnorm_forward(tx, Tensor(), kEps);
  const Tensor dx =
      ops::rmsnorm_backward(ops::from_vector(ctx, {n, d}, DType::F64, proj), tx, Tensor(), f.rstd, Tensor());
  test::expect_close_normwise(ops::to_double_vector(dx), test::central_difference(loss, x), kFdTol,
                              "rmsnorm dx");
}

TEST(NormOps, RmsNormWeightGradientAccumulates) {
  auto ctx = cpu();
  const int64_t n = 5, d = 8;
  for (DType acc : {DType::F32, DType::F64}) {
    const Tensor tx = ops::from_vector(ctx, {n, d}, DType::F32, random_values(n * d, 9));
    const Tensor tw = ops::from_vector(ctx, {d}, DType::F32, random_values(d, 10));
    const Tensor dy = ops::from_vector(ctx, {n, d}, DType::F32, random_values(n * d, 11));
    const ops::NormForward f = ops::rmsnorm_forward(tx, tw, kEps);
    Tensor once = ops::zeros(ctx, {d}, acc);
    ops::rmsnorm_backward(dy, tx, tw, f.rstd, once);
    Tensor twice = ops::full(ctx, {d}, 0.5, acc);
    ops::rmsnorm_backward(dy, tx, tw, f.rstd, twice);
    ops::rmsnorm_backward(dy, tx, tw, f.rstd, twice);
    const auto a = ops::to_double_vector(once), b = ops::to_double_vector(twice);
    std::vector<double> expected(a.size());
    for (size_t i = 0; i < a.size(); ++i) expected[i] = 0.5 + 2.0 * a[i];
    test::expect_close(b, expected, 1e-6, 1e-6, "accumulated dweight");
  }
}

TEST(NormOps, LayerNormForwardMatchesNaive) {
  auto ctx = cpu();
  const int64_t n = 5, d = 24;
  auto x = random_values(n * d, 12, 3.0);
  for (double& v : x) v += 4.0;  // a non-zero mean
  const ops::NormForward f = ops::layernorm_forward(ops::from_vector(ctx, {n, d}, DType::F64, x), kEps);
  const NaiveNorm ref = naive_layernorm(x, n, d, kEps);
  test::expect_close(ops::to_double_vector(f.y), ref.y, 1e-12, 1e-13, "layernorm y");
  test::expect_close(ops::to_double_vector(f.mean), ref.mean, 1e-14, 1e-14, "layernorm mean");
  test::expect_close(ops::to_double_vector(f.rstd), ref.rstd, 1e-12, 0.0, "layernorm rstd");
}

TEST(NormOps, LayerNormBackwardMatchesFiniteDifferences) {
  auto ctx = cpu();
  const int64_t n = 4, d = 12;
  auto x = random_values(n * d, 13, 2.0);
  for (double& v : x) v -= 1.0;
  const auto proj = random_values(n * d, 14);
  auto loss = [&](const std::vector<double>& p) {
    return test::dot(proj, ops::to_double_vector(
                               ops::layernorm_forward(ops::from_vector(ctx, {n, d}, DType::F64, p), kEps).y));
  };
  const Tensor tx = ops::from_vector(ctx, {n, d}, DType::F64, x);
  const ops::NormForward f = ops::layernorm_forward(tx, kEps);
  const Tensor dx =
      ops::layernorm_backward(ops::from_vector(ctx, {n, d}, DType::F64, proj), tx, f.mean, f.rstd);
  test::expect_close_normwise(ops::to_double_vector(dx), test::central_difference(loss, x), kFdTol,
                              "layernorm dx");
}

// F32 and BF16 against F64 on the same (rounded) inputs. F32: rtol 1e-5. BF16: the output's rounding
// (2^-9 relative) plus float arithmetic: rtol 2^-8, atol 1e-5 (forward) / 1e-4 (backward, cancellation).
TEST(NormOps, LowPrecisionMatchesF64) {
  auto ctx = cpu();
  const int64_t n = 8, d = 64;
  const auto x = random_values(n * d, 15, 2.0);
  const auto w = random_values(d, 16);
  const auto dy = random_values(n * d, 17);
  for (DType t : {DType::F32, DType::BF16}) {
    const double rtol = t == DType::F32 ? 1e-5 : 1.0 / 256, atol = t == DType::F32 ? 1e-6 : 1e-5;
    const double atol_bwd = t == DType::F32 ? 1e-5 : 1e-4;
    const Tensor xl = ops::from_vector(ctx, {n, d}, t, x), wl = ops::from_vector(ctx, {d}, t, w);
    const Tensor dyl = ops::from_vector(ctx, {n, d}, t, dy);
    const Tensor x64 = ops::cast(xl, DType::F64), w64 = ops::cast(wl, DType::F64),
                 dy64 = ops::cast(dyl, DType::F64);
    const std::string name(dtype_name(t));

    const ops::NormForward r = ops::rmsnorm_forward(xl, wl, kEps), r64 = ops::rmsnorm_forward(x64, w64, kEps);
    EXPECT_EQ(r.y.dtype(), t);
    EXPECT_EQ(r.rstd.dtype(), DType::F32);
    test::expect_close(ops::to_double_vector(r.y), ops::to_double_vector(r64.y), rtol, atol,
                       name + " rmsnorm y");
    Tensor dw = ops::zeros(ctx, {d}, DType::F32), dw64 = ops::zeros(ctx, {d}, DType::F64);
    const Tensor dx = ops::rmsnorm_backward(dyl, xl, wl, r.rstd, dw);
    const Tensor dx64 = ops::rmsnorm_backward(dy64, x64, w64, r64.rstd, dw64);
    EXPECT_EQ(dx.dtype(), t);
    test::expect_close(ops::to_double_vector(dx), ops::to_double_vector(dx64), rtol, atol_bwd,
                       name + " rmsnorm dx");
    test::expect_close(ops::to_double_vector(dw), ops::to_double_vector(dw64), 1e-5, 1e-5,
                       name + " rmsnorm dw");

    const ops::NormForward l = ops::layernorm_forward(xl, kEps), l64 = ops::layernorm_forward(x64, kEps);
    test::expect_close(ops::to_double_vector(l.y), ops::to_double_vector(l64.y), rtol, atol,
                       name + " layernorm y");
    const Tensor ldx = ops::layernorm_backward(dyl, xl, l.mean, l.rstd);
    const Tensor ldx64 = ops::layernorm_backward(dy64, x64, l64.mean, l64.rstd);
    test::expect_close(ops::to_double_vector(ldx), ops::to_double_vector(ldx64), rtol, atol_bwd,
                       name + " layernorm dx");
  }
}

TEST(NormOps, NonContiguousInputIsAccepted) {
  auto ctx = cpu();
  const Tensor x = ops::from_vector(ctx, {8, 6}, DType::F64, random_values(48, 18));
  const Tensor xt = x.transpose(0, 1);  // [6, 8], not contiguous
  const ops::NormForward a = ops::layernorm_forward(xt, kEps);
  const ops::NormForward b = ops::layernorm_forward(ops::contiguous(xt), kEps);
  EXPECT_EQ(ops::to_double_vector(a.y), ops::to_double_vector(b.y));
}

TEST(NormOps, ErrorsNameTheProblem) {
  auto ctx = cpu();
  const Tensor x = ops::from_vector(ctx, {4, 8}, DType::F32, random_values(32, 19));
  const Tensor w = ops::full(ctx, {8}, 1.0, DType::F32);
  test::expect_error_containing([&] { ops::rmsnorm_forward(x, ops::full(ctx, {7}, 1.0, DType::F32), kEps); },
                                "[rmsnorm_forward] weight has shape (7)");
  test::expect_error_containing([&] { ops::rmsnorm_forward(x, ops::full(ctx, {8}, 1.0, DType::BF16), kEps); },
                                "weight has dtype bf16 but x has f32");
  test::expect_error_containing([&] { ops::rmsnorm_forward(ops::cast(x, DType::I32), Tensor(), kEps); },
                                "x has dtype i32; expected f32, f64 or bf16");
  test::expect_error_containing([&] { ops::layernorm_forward(x, -1.0); }, "eps -1 must be finite and >= 0");
  const ops::NormForward f = ops::rmsnorm_forward(x, w, kEps);
  Tensor dw = ops::zeros(ctx, {8}, DType::F32);
  test::expect_error_containing(
      [&] {
        ops::rmsnorm_backward(ops::full(ctx, {4, 7}, 1.0, DType::F32), x, w, f.rstd, dw);
      },
      "[rmsnorm_backward] dy has shape (4,7) but x has (4,8)");
  test::expect_error_containing([&] { ops::rmsnorm_backward(x, x, w, f.rstd, Tensor()); },
                                "dweight_accum must be its gradient accumulator");
  test::expect_error_containing(
      [&] { ops::rmsnorm_backward(x, x, w, f.rstd, ops::zeros(ctx, {8}, DType::BF16)); },
      "dweight_accum has dtype bf16; expected f32 or f64");
  test::expect_error_containing([&] { ops::rmsnorm_backward(x, x, Tensor(), f.rstd, dw); },
                                "dweight_accum is given but weight is undefined");
  test::expect_error_containing([&] { ops::rmsnorm_backward(x, x, w, ops::zeros(ctx, {3}, DType::F32), dw); },
                                "rstd has shape (3); expected [4]");
  test::expect_error_containing(
      [&] { ops::layernorm_backward(x, x, f.rstd, ops::zeros(ctx, {4}, DType::F64)); },
      "rstd has dtype f64; expected f32");
}

}  // namespace
}  // namespace coat
