// Gradient-check helpers for the layer ops' tests: random inputs, central finite differences of a scalar
// function, and comparisons with stated tolerances.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace coat::test {

/// n normal(0, scale) values from a seeded std::mt19937 (never exactly zero in practice).
inline std::vector<double> random_values(size_t n, uint32_t seed, double scale = 1.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist(0.0, scale);
  std::vector<double> v(n);
  for (double& x : v) x = dist(gen);
  return v;
}

/// sum_i w_i * y_i: the random projection that turns an op's output into a scalar loss L, so that one
/// backward with dy = w checks the whole vector-Jacobian product.
inline double dot(const std::vector<double>& w, const std::vector<double>& y) {
  EXPECT_EQ(w.size(), y.size());
  double s = 0.0;
  for (size_t i = 0; i < std::min(w.size(), y.size()); ++i) s += w[i] * y[i];
  return s;
}

/// Central differences: g_i = (f(x + h e_i) - f(x - h e_i)) / (2 h), truncation error O(h^2).
inline std::vector<double> central_difference(const std::function<double(const std::vector<double>&)>& f,
                                              std::vector<double> x, double h = 1e-6) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double up = f(x);
    x[i] = x0 - h;
    const double down = f(x);
    x[i] = x0;
    g[i] = (up - down) / (2.0 * h);
  }
  return g;
}

/// Norm-wise check in the max norm: max_i |actual_i - expected_i| <= rel_tol * max_i |expected_i|.
inline void expect_close_normwise(const std::vector<double>& actual, const std::vector<double>& expected,
                                  double rel_tol, const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  double max_err = 0.0, max_ref = 0.0;
  size_t worst = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double err = std::abs(actual[i] - expected[i]);
    if (err > max_err) {
      max_err = err;
      worst = i;
    }
    max_ref = std::max(max_ref, std::abs(expected[i]));
  }
  EXPECT_GT(max_ref, 0.0) << what << ": the reference is all zeros, the check would be vacuous";
  EXPECT_LE(max_err, rel_tol * max_ref)
      << what << ": worst element " << worst << " is " << actual[worst] << ", expected " << expected[worst]
      << " (max |expected| " << max_ref << ", relative tolerance " << rel_tol << ")";
}

/// Element-wise check: |actual_i - expected_i| <= rtol * |expected_i| + atol for every i.
inline void expect_close(const std::vector<double>& actual, const std::vector<double>& expected, double rtol,
                         double atol, const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  int64_t failures = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double tol = rtol * std::abs(expected[i]) + atol;
    if (!(std::abs(actual[i] - expected[i]) <= tol)) {
      if (++failures <= 5)
        ADD_FAILURE() << what << ": element " << i << " is " << actual[i] << ", expected " << expected[i]
                      << " (rtol " << rtol << ", atol " << atol << ")";
    }
  }
  EXPECT_EQ(failures, 0) << what << ": elements out of tolerance";
}

/// Concatenates vectors (the inputs of a multi-input op as one point for central_difference).
inline std::vector<double> concat(const std::vector<std::vector<double>>& parts) {
  std::vector<double> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

/// Splits x into consecutive pieces of the given sizes.
inline std::vector<std::vector<double>> split(const std::vector<double>& x,
                                              const std::vector<size_t>& sizes) {
  std::vector<std::vector<double>> out;
  size_t at = 0;
  for (size_t n : sizes) {
    out.emplace_back(x.begin() + static_cast<std::ptrdiff_t>(at),
                     x.begin() + static_cast<std::ptrdiff_t>(at + n));
    at += n;
  }
  return out;
}

}  // namespace coat::test
