// RoPE with explicit inverse frequencies (what scaled RoPE variants hand the kernels): the rotate-half
// formula with those frequencies, the theta form as a special case bit for bit, the tape's backward (the
// inverse rotation), and the frequencies' argument errors.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "coat/autograd/tape.h"
#include "coat/nn/rope.h"
#include "coat/ops/copy.h"
#include "coat/ops/rope.h"
#include "coat/ops/runtime.h"
#include "expect_error.h"
#include "random_values.h"

namespace coat {
namespace {

/// y[i] = x[i] cos(a_i) - x[i + half] sin(a_i), y[i + half] = x[i + half] cos(a_i) + x[i] sin(a_i),
/// a_i = (t + offset) * inv_freq[i].
std::vector<double> naive_rope(const std::vector<double>& x, int64_t t_count, int64_t heads, int64_t dh,
                               const std::vector<double>& inv_freq, int64_t offset) {
  std::vector<double> y(x.size());
  const int64_t half = dh / 2;
  for (int64_t t = 0; t < t_count; ++t)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < half; ++i) {
        const size_t lo = static_cast<size_t>((t * heads + h) * dh + i), hi = lo + static_cast<size_t>(half);
        const double a = static_cast<double>(t + offset) * inv_freq[static_cast<size_t>(i)];
        y[lo] = x[lo] * std::cos(a) - x[hi] * std::sin(a);
        y[hi] = x[hi] * std::cos(a) + x[lo] * std::sin(a);
      }
  return y;
}

TEST(RopeFrequenciesOps, RotatesByTheGivenFrequencies) {
  const ContextPtr ctx = ops::make_context(Device::cpu());
  const int64_t t = 9, h = 3, dh = 10;
  const std::vector<double> inv_freq = {0.9, 0.31, 0.05, 2.5e-3, 1.25e-4};  // not a power law
  const std::vector<double> x = test::nonzero_normal(static_cast<size_t>(t * h * dh), 11);
  for (int64_t offset : {0, 1000}) {
    const Tensor y = ops::rope(ops::from_vector(ctx, {1, t, h, dh}, DType::F64, x), inv_freq, offset);
    const std::vector<double> want = naive_rope(x, t, h, dh, inv_freq, offset),
                              got = ops::to_double_vector(y);
    for (size_t e = 0; e < got.size(); ++e) EXPECT_NEAR(got[e], want[e], 1e-12) << e << " offset " << offset;
  }
}

TEST(RopeFrequenciesOps, ThetaIsTheDefaultFrequenciesBitForBit) {
  const ContextPtr ctx = ops::make_context(Device::cpu());
  for (DType dtype : {DType::F32, DType::BF16, DType::F64}) {
    const Tensor x = test::nonzero_normal_tensor(ctx, {2, 5, 4, 16}, dtype, 21);
    const std::vector<double> f = ops::rope_inverse_frequencies(500000.0, 16);
    for (bool inverse : {false, true}) {
      EXPECT_EQ(ops::to_bytes(ops::rope(x, f, 7, inverse, 3)),
                ops::to_bytes(ops::rope(x, 500000.0, 7, inverse, 3)));
      Tensor a = ops::clone(x), b = ops::clone(x);
      ops::rope_(a, f, 7, inverse);
      ops::rope_(b, 500000.0, 7, inverse);
      EXPECT_EQ(ops::to_bytes(a), ops::to_bytes(b));
    }
  }
}

TEST(RopeFrequenciesOps, TapeBackwardIsTheInverseRotation) {
  const ContextPtr ctx = ops::make_context(Device::cpu());
  const std::vector<double> inv_freq = {0.7, 0.02, 3e-4};
  autograd::Tape tape(true);
  autograd::Var x = tape.leaf(test::nonzero_normal_tensor(ctx, {2, 4, 2, 6}, DType::F64, 31), true);
  autograd::Var y = nn::rope(tape, x, inv_freq, 5);
  const Tensor dy = test::nonzero_normal_tensor(ctx, {2, 4, 2, 6}, DType::F64, 32);
  EXPECT_EQ(ops::to_bytes(y.value), ops::to_bytes(ops::rope(x.value, inv_freq, 5)));
  tape.backward(y, dy);
  EXPECT_EQ(ops::to_bytes(tape.grad(x)), ops::to_bytes(ops::rope(dy, inv_freq, 5, /*inverse=*/true)));
}

TEST(RopeFrequenciesOps, FrequencyErrorsNameTheProblem) {
  const ContextPtr ctx = ops::make_context(Device::cpu());
  const Tensor x = test::nonzero_normal_tensor(ctx, {1, 2, 2, 6}, DType::F32, 41);
  test::expect_error_containing(
      [&] {
        ops::rope(x, std::vector<double>{1.0, 0.1});
      },
      "[rope] inv_freq has 2 values; x (1,2,2,6) needs Dh/2 = 3");
  test::expect_error_containing(
      [&] {
        ops::rope(x, std::vector<double>{1.0, std::numeric_limits<double>::infinity(), 0.1});
      },
      "inv_freq[1] = inf is not finite");
}

}  // namespace
}  // namespace coat
