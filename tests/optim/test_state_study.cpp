// The Table 1 study on synthetic moments: zero states have zero error, and range expansion lowers the
// error of E4M3 on groups whose values span three decades (the point of the method).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "coat/ops/copy.h"
#include "coat/ops/runtime.h"
#include "coat/optim/state_study.h"

namespace coat {
namespace {

// m: random sign, magnitude log-uniform over [1e-6, 1e-3]; v: log-uniform over [1e-6, 1e-5]. Within a group
// of 128, AdamW's first moments span about three decades and its second moments about one (COAT, section 5).
std::pair<Tensor, Tensor> synthetic_moments(const ContextPtr& ctx, int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> e(-6.0, -3.0), f(0.0, 1.0);
  std::vector<double> m(static_cast<size_t>(n)), v(static_cast<size_t>(n));
  for (size_t i = 0; i < m.size(); ++i) {
    const double mag = std::pow(10.0, e(gen));
    m[i] = (f(gen) < 0.5 ? -mag : mag);
    v[i] = 1e-6 * std::pow(10.0, f(gen));
  }
  return {ops::from_vector(ctx, {n}, DType::F32, m), ops::from_vector(ctx, {n}, DType::F32, v)};
}

TEST(StateStudy, ZeroStatesHaveZeroError) {
  auto ctx = ops::make_context(Device::cpu());
  std::vector<std::pair<Tensor, Tensor>> moments = {
      {ops::from_vector(ctx, {300}, DType::F32, std::vector<double>(300, 0.0)),
       ops::from_vector(ctx, {300}, DType::F32, std::vector<double>(300, 0.0))}};
  const optim::StudyTable t = optim::quantization_study(moments, optim::table1_formats(128), 1e-8);
  EXPECT_EQ(t.elements, 300);
  for (const auto& row : t.mse) {
    for (double x : row) EXPECT_EQ(x, 0.0);
  }
}

TEST(StateStudy, ExpansionLowersTheErrorOfE4M3AndE5M2IsWorst) {
  auto ctx = ops::make_context(Device::cpu());
  std::vector<std::pair<Tensor, Tensor>> moments = {synthetic_moments(ctx, 128 * 200, 7)};
  const optim::StudyTable t = optim::quantization_study(moments, optim::table1_formats(128), 1e-8);
  ASSERT_EQ(t.labels.size(), 4u);
  ASSERT_EQ(t.labels[0], "E4M3");
  ASSERT_EQ(t.labels[1], "E4M3+Expand");
  ASSERT_EQ(t.labels[2], "E5M2");
  const double plain = t.mse[0][0], expand = t.mse[1][1], e5m2 = t.mse[2][2];
  EXPECT_GT(plain, 0.0);
  EXPECT_LT(expand, plain);
  EXPECT_GT(e5m2, plain);
  EXPECT_GT(t.mean_square_update, 0.0);
  EXPECT_NE(optim::format_study(t).find("E4M3+Expand"), std::string::npos);
}

}  // namespace
}  // namespace coat
