// ops::sum_squares: double accumulation for every float dtype, strided input, propagation of inf/NaN.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "coat/core/error.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/optimizer.h"
#include "coat/ops/runtime.h"

namespace coat {
namespace {

ContextPtr cpu() { return ops::make_context(Device::cpu()); }

std::vector<double> normal_values(size_t n, uint32_t seed, double stddev) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist(0.0, stddev);
  std::vector<double> v(n);
  for (double& x : v) x = dist(gen);
  return v;
}

// The reference: the values the tensor actually holds (after rounding to its dtype), squared and summed in
// double in index order: the kernel's order, so the results are equal, not just close.
double reference_sum_squares(const Tensor& t) {
  double total = 0.0;
  for (double x : ops::to_double_vector(t)) total += x * x;
  return total;
}

class SumSquaresDtype : public ::testing::TestWithParam<DType> {};

TEST_P(SumSquaresDtype, EqualsDoubleReference) {
  auto ctx = cpu();
  const DType dtype = GetParam();
  const std::vector<double> values = normal_values(10007, 3, dtype == DType::E4M3 ? 10.0 : 1e-2);
  Tensor x = ops::from_vector(ctx, {10007}, dtype, values);
  Tensor s = ops::sum_squares(x);
  ASSERT_EQ(s.dtype(), DType::F64);
  ASSERT_EQ(s.numel(), 1);
  const double ref = reference_sum_squares(x);
  EXPECT_EQ(s.item(), ref);
  // Against the unrounded inputs the difference is only the dtype's rounding of each value.
  double exact = 0.0;
  for (double v : values) exact += v * v;
  const double rel = dtype == DType::F32 ? 1e-6 : dtype == DType::F64 ? 1e-12 : 2e-2;
  EXPECT_NEAR(s.item(), exact, rel * exact);
}

INSTANTIATE_TEST_SUITE_P(Optim, SumSquaresDtype,
                         ::testing::Values(DType::F32, DType::F64, DType::BF16, DType::F16, DType::E4M3),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(dtype_name(info.param));
                         });

TEST(SumSquares, DoubleAccumulationKeepsSmallTerms) {
  // 1 + 2^20 * (2^-12)^2 = 1 + 2^-4: each small square (2^-24) is below half an ulp of 1 in float.
  auto ctx = cpu();
  std::vector<double> values(1 + (1 << 20), 1.0 / 4096.0);
  values[0] = 1.0;
  Tensor x = ops::from_vector(ctx, {static_cast<int64_t>(values.size())}, DType::F32, values);
  EXPECT_EQ(ops::sum_squares(x).item(), 1.0625);
}

TEST(SumSquares, StridedInputAndBf16) {
  auto ctx = cpu();
  const std::vector<double> values = normal_values(12 * 34, 9, 3.0);
  Tensor x = ops::from_vector(ctx, {12, 34}, DType::BF16, values);
  Tensor xt = x.transpose(0, 1);
  ASSERT_FALSE(xt.is_contiguous());
  EXPECT_EQ(ops::sum_squares(xt).item(), reference_sum_squares(x));
  EXPECT_EQ(ops::sum_squares(x.slice(1, 0, 34, 3)).item(), reference_sum_squares(ops::contiguous(x.slice(1, 0, 34, 3))));
}

TEST(SumSquares, EmptyIsZeroAndNonFinitePropagates) {
  auto ctx = cpu();
  EXPECT_EQ(ops::sum_squares(ops::zeros(ctx, {0}, DType::F32)).item(), 0.0);
  Tensor x = ops::from_vector(ctx, {3}, DType::F32, std::vector<double>{1.0, std::numeric_limits<double>::infinity(), 2.0});
  EXPECT_TRUE(std::isinf(ops::sum_squares(x).item()));
  x = ops::from_vector(ctx, {3}, DType::BF16, std::vector<double>{1.0, std::nan(""), 2.0});
  EXPECT_TRUE(std::isnan(ops::sum_squares(x).item()));
  // The largest floats squared stay finite in double.
  x = ops::from_vector(ctx, {2}, DType::F32, std::vector<double>{3.4e38, -3.4e38});
  EXPECT_TRUE(std::isfinite(ops::sum_squares(x).item()));
}

TEST(SumSquares, RejectsIntegerInput) {
  auto ctx = cpu();
  try {
    ops::sum_squares(ops::zeros(ctx, {4}, DType::I32));
    FAIL() << "no exception";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("[sum_squares] dtype i32 not supported"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace coat
