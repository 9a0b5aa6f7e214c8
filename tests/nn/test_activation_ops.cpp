// SwiGLU op on the CPU: naive forward, F64 finite-difference backward, F32/BF16 against F64, errors.
#include <gtest/gtest.h>

#include "expect_error.h"
#include "finite_difference.h"

#include <cmath>

#include "coat/ops/activation.h"
#include "coat/ops/copy.h"
#include "coat/ops/runtime.h"

namespace coat {
namespace {

using test::random_values;

ContextPtr cpu() {
  return ops::make_context(Device::cpu());
}

TEST(ActivationOps, SwigluMatchesNaive) {
  auto ctx = cpu();
  const auto g = random_values(3 * 40, 1, 3.0);
  const auto u = random_values(3 * 40, 2);
  const Tensor y = ops::swiglu(ops::from_vector(ctx, {3, 40}, DType::F64, g),
                               ops::from_vector(ctx, {3, 40}, DType::F64, u));
  std::vector<double> ref(g.size());
  for (size_t i = 0; i < g.size(); ++i) ref[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
  EXPECT_EQ(y.shape(), Shape({3, 40}));
  test::expect_close(ops::to_double_vector(y), ref, 1e-14, 1e-15, "swiglu");
}

TEST(ActivationOps, SwigluBackwardMatchesFiniteDifferences) {
  auto ctx = cpu();
  const int64_t n = 60;
  const auto g = random_values(n, 3, 3.0);
  const auto u = random_values(n, 4);
  const auto proj = random_values(n, 5);
  auto loss = [&](const std::vector<double>& p) {
    const auto parts = test::split(p, {n, n});
    return test::dot(proj,
                     ops::to_double_vector(ops::swiglu(ops::from_vector(ctx, {n}, DType::F64, parts[0]),
                                                       ops::from_vector(ctx, {n}, DType::F64, parts[1]))));
  };
  const auto numeric = test::split(test::central_difference(loss, test::concat({g, u})), {n, n});
  const ops::SwigluGrads grads = ops::swiglu_backward(ops::from_vector(ctx, {n}, DType::F64, proj),
                                                      ops::from_vector(ctx, {n}, DType::F64, g),
                                                      ops::from_vector(ctx, {n}, DType::F64, u));
  test::expect_close_normwise(ops::to_double_vector(grads.dgate), numeric[0], 1e-6, "swiglu dgate");
  test::expect_close_normwise(ops::to_double_vector(grads.dup), numeric[1], 1e-6, "swiglu dup");
}

// F32: rtol 1e-6 (a float exp and a few products). BF16: one rounding of the output, rtol 2^-8.
TEST(ActivationOps, LowPrecisionMatchesF64) {
  auto ctx = cpu();
  const int64_t n = 4096;
  const auto g = random_values(n, 6, 4.0), u = random_values(n, 7), dy = random_values(n, 8);
  for (DType dt : {DType::F32, DType::BF16}) {
    const Tensor gl = ops::from_vector(ctx, {n}, dt, g), ul = ops::from_vector(ctx, {n}, dt, u);
    const Tensor dyl = ops::from_vector(ctx, {n}, dt, dy);
    const Tensor g64 = ops::cast(gl, DType::F64), u64 = ops::cast(ul, DType::F64),
                 dy64 = ops::cast(dyl, DType::F64);
    const double rtol = dt == DType::F32 ? 1e-6 : 1.0 / 256, atol = dt == DType::F32 ? 1e-7 : 1e-6;
    const std::string name(dtype_name(dt));
    const Tensor y = ops::swiglu(gl, ul);
    EXPECT_EQ(y.dtype(), dt);
    test::expect_close(ops::to_double_vector(y), ops::to_double_vector(ops::swiglu(g64, u64)), rtol, atol,
                       name + " swiglu");
    const ops::SwigluGrads a = ops::swiglu_backward(dyl, gl, ul), b = ops::swiglu_backward(dy64, g64, u64);
    test::expect_close(ops::to_double_vector(a.dgate), ops::to_double_vector(b.dgate), rtol, atol,
                       name + " dgate");
    test::expect_close(ops::to_double_vector(a.dup), ops::to_double_vector(b.dup), rtol, atol, name + " dup");
  }
}

// The packed form gives the bits of swiglu / swiglu_backward on the two halves of gu [..., 2F].
TEST(ActivationOps, SwigluPackedEqualsSwigluOnTheHalves) {
  auto ctx = cpu();
  const int64_t rows = 5, f = 13;
  for (DType dt : {DType::F64, DType::F32, DType::BF16}) {
    const Tensor gu = ops::from_vector(ctx, {rows, 1, 2 * f}, dt, random_values(rows * 2 * f, 20, 3.0));
    const Tensor dy = ops::from_vector(ctx, {rows, 1, f}, dt, random_values(rows * f, 21));
    const Tensor gate = ops::contiguous(gu.slice(2, 0, f)), up = ops::contiguous(gu.slice(2, f, 2 * f));
    const Tensor y = ops::swiglu_packed(gu);
    EXPECT_EQ(y.shape(), Shape({rows, 1, f}));
    EXPECT_EQ(ops::to_bytes(y), ops::to_bytes(ops::swiglu(gate, up))) << dtype_name(dt);
    const Tensor dgu = ops::swiglu_packed_backward(dy, gu);
    EXPECT_EQ(dgu.shape(), gu.shape());
    const ops::SwigluGrads ref = ops::swiglu_backward(dy, gate, up);
    EXPECT_EQ(ops::to_bytes(dgu.slice(2, 0, f)), ops::to_bytes(ref.dgate)) << dtype_name(dt);
    EXPECT_EQ(ops::to_bytes(dgu.slice(2, f, 2 * f)), ops::to_bytes(ref.dup)) << dtype_name(dt);
  }
}

TEST(ActivationOps, ErrorsNameTheProblem) {
  auto ctx = cpu();
  const Tensor a = ops::from_vector(ctx, {2, 3}, DType::F32, random_values(6, 9));
  test::expect_error_containing(
      [&] {
        ops::swiglu(a, a.reshape({3, 2}));
      },
      "[swiglu] up has shape (3,2) but gate has (2,3)");
  test::expect_error_containing([&] { ops::swiglu(a, ops::cast(a, DType::BF16)); },
                                "up has dtype bf16 but gate has f32");
  test::expect_error_containing([&] { ops::swiglu_backward(a.reshape({6}), a, a); },
                                "[swiglu_backward] dy has shape (6) but gate has (2,3)");
  test::expect_error_containing([&] { ops::swiglu(ops::cast(a, DType::I64), ops::cast(a, DType::I64)); },
                                "gate has dtype i64; expected f32, f64 or bf16");
  test::expect_error_containing([&] { ops::swiglu_packed(a); },
                                "[swiglu_packed] gu has shape (2,3); expected [..., 2F]");
  const Tensor gu = ops::from_vector(ctx, {3, 2}, DType::F32, random_values(6, 10));
  test::expect_error_containing([&] { ops::swiglu_packed_backward(gu, gu); },
                                "[swiglu_packed_backward] dy has shape (3,2); expected (3,1) for gu (3,2)");
  test::expect_error_containing(
      [&] { ops::swiglu_packed_backward(ops::cast(gu.slice(1, 0, 1), DType::BF16), gu); },
      "dy has dtype bf16 but gu has f32");
}

}  // namespace
}  // namespace coat
