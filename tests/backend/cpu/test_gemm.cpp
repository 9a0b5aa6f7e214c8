// cpu::matmul against a naive FP64 triple loop on random inputs: F32, F64, BF16 (and F16), all transposes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <vector>

#include "coat/backend/cpu/gemm.h"
#include "coat/core/context.h"
#include "coat/core/error.h"
#include "coat/core/float_formats.h"
#include "coat/core/tensor.h"

namespace {

using coat::DType;
using coat::Shape;
using coat::Tensor;

double get(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::F32:
      return t.data<float>()[i];
    case DType::F64:
      return t.data<double>()[i];
    case DType::BF16:
      return coat::bf16_to_float(t.data<uint16_t>()[i]);
    case DType::F16:
      return coat::f16_to_float(t.data<uint16_t>()[i]);
    default:
      ADD_FAILURE() << "unexpected dtype";
      return 0.0;
  }
}

void set(Tensor& t, int64_t i, double v) {
  switch (t.dtype()) {
    case DType::F32:
      t.data<float>()[i] = static_cast<float>(v);
      return;
    case DType::F64:
      t.data<double>()[i] = v;
      return;
    case DType::BF16:
      t.data<uint16_t>()[i] = coat::float_to_bf16(static_cast<float>(v));
      return;
    case DType::F16:
      t.data<uint16_t>()[i] = coat::float_to_f16(static_cast<float>(v));
      return;
    default:
      ADD_FAILURE() << "unexpected dtype";
      return;
  }
}

// Uniform in [-1, -0.05] U [0.05, 1]: random and never zero (a zero would hide a missing term).
Tensor random_tensor(const coat::ContextPtr& ctx, const Shape& shape, DType dtype, uint32_t seed) {
  Tensor t = Tensor::empty(ctx, shape, dtype);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> magnitude(0.05, 1.0);
  std::bernoulli_distribution negative(0.5);
  for (int64_t i = 0; i < t.numel(); ++i) set(t, i, negative(rng) ? -magnitude(rng) : magnitude(rng));
  return t;
}

std::vector<double> values(const Tensor& t) {
  std::vector<double> v(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) v[i] = get(t, i);
  return v;
}

// alpha * op(a) @ op(b) + beta * c0 in FP64 from the stored (already rounded) input values.
std::vector<double> reference(const Tensor& a, const Tensor& b, bool ta, bool tb,
                              const std::vector<double>& c0, double alpha, double beta) {
  const int64_t m = ta ? a.size(1) : a.size(0);
  const int64_t k = ta ? a.size(0) : a.size(1);
  const int64_t n = tb ? b.size(0) : b.size(1);
  const std::vector<double> av = values(a);
  const std::vector<double> bv = values(b);
  std::vector<double> out(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double sum = 0.0;
      for (int64_t p = 0; p < k; ++p) {
        const double x = ta ? av[p * m + i] : av[i * k + p];
        const double y = tb ? bv[j * k + p] : bv[p * n + j];
        sum += x * y;
      }
      out[i * n + j] = alpha * sum + (beta != 0.0 ? beta * c0[i * n + j] : 0.0);
    }
  }
  return out;
}

double relative_l2(const std::vector<double>& got, const std::vector<double>& want) {
  double err = 0.0;
  double norm = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    err += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
  }
  return std::sqrt(err / norm);
}

struct GemmCase {
  int64_t m, n, k;
};
const GemmCase kCases[] = {{1, 1, 1}, {1, 64, 96}, {17, 33, 65},  {64, 64, 64},
                           {5, 1, 7}, {31, 47, 1}, {130, 70, 200}};

// Runs every case, transpose combination and (alpha, beta) pair; checks the relative L2 error.
void check_matmul(DType in, DType out_dtype, double tolerance) {
  auto ctx = std::make_shared<coat::CpuContext>();
  uint32_t seed = 1234;
  for (const GemmCase& c : kCases) {
    for (int t = 0; t < 4; ++t) {
      const bool ta = (t & 1) != 0;
      const bool tb = (t & 2) != 0;
      for (const auto& [alpha, beta] : {std::pair{1.0f, 0.0f}, std::pair{0.75f, -1.5f}}) {
        SCOPED_TRACE(testing::Message() << "M=" << c.m << " N=" << c.n << " K=" << c.k << " ta=" << ta
                                        << " tb=" << tb << " alpha=" << alpha << " beta=" << beta);
        Tensor a = random_tensor(ctx, ta ? Shape{c.k, c.m} : Shape{c.m, c.k}, in, seed++);
        Tensor b = random_tensor(ctx, tb ? Shape{c.n, c.k} : Shape{c.k, c.n}, in, seed++);
        Tensor out = random_tensor(ctx, {c.m, c.n}, out_dtype, seed++);
        const std::vector<double> c0 = values(out);
        const std::vector<double> want = reference(a, b, ta, tb, c0, alpha, beta);
        coat::cpu::matmul(a, b, ta, tb, out, alpha, beta);
        EXPECT_LE(relative_l2(values(out), want), tolerance);
      }
    }
  }
}

// Tolerances. F32: sgemm accumulates K <= 200 exact-input products in FP32; the classical bound is
// K * 2^-24 ~ 1.2e-5 relative to sum|a||b|, and random signs make the typical error ~sqrt(K) * 2^-24 ~ 1e-6
// relative to the result: 1e-5 has margin without hiding a wrong term (which gives errors ~1e-2 and up).
TEST(CpuGemm, F32MatchesFp64Reference) {
  check_matmul(DType::F32, DType::F32, 1e-5);
}

// F64: the same argument with 2^-53: 1e-13.
TEST(CpuGemm, F64MatchesFp64Reference) {
  check_matmul(DType::F64, DType::F64, 1e-13);
}

// BF16 -> BF16: exact widening, FP32 accumulation (~1e-6 as above), then one round-to-nearest-even to bf16
// (8 significant bits), which moves each element by at most 2^-8 of itself, so the relative L2 error is at
// most 2^-8 + 1e-6 ~ 3.9e-3 (reached on 1x1 outputs; a truncating conversion can exceed it).
TEST(CpuGemm, Bf16MatchesFp64Reference) {
  check_matmul(DType::BF16, DType::BF16, 4.0e-3);
}

// BF16 -> F32: no final rounding to 16 bits, only FP32 accumulation.
TEST(CpuGemm, Bf16ToF32MatchesFp64Reference) {
  check_matmul(DType::BF16, DType::F32, 1e-5);
}

// F16 -> F16: final rounding (11 significant bits) moves each element by at most 2^-11 ~ 4.9e-4 of itself.
TEST(CpuGemm, F16MatchesFp64Reference) {
  check_matmul(DType::F16, DType::F16, 5.0e-4);
}

TEST(CpuGemm, BetaZeroIgnoresNanInOut) {
  auto ctx = std::make_shared<coat::CpuContext>();
  for (DType dtype : {DType::F32, DType::BF16}) {
    Tensor a = random_tensor(ctx, {8, 16}, dtype, 1);
    Tensor b = random_tensor(ctx, {16, 4}, dtype, 2);
    Tensor out = Tensor::empty(ctx, {8, 4}, dtype);
    for (int64_t i = 0; i < out.numel(); ++i) set(out, i, std::numeric_limits<double>::quiet_NaN());
    coat::cpu::matmul(a, b, false, false, out, 1.0f, 0.0f);
    const std::vector<double> want = reference(a, b, false, false, {}, 1.0, 0.0);
    const std::vector<double> got = values(out);
    for (double v : got) ASSERT_TRUE(std::isfinite(v));
    EXPECT_LE(relative_l2(got, want), 4.0e-3);
  }
}

TEST(CpuGemm, EmptyInnerDimensionScalesOut) {
  auto ctx = std::make_shared<coat::CpuContext>();
  Tensor a = Tensor::empty(ctx, {3, 0}, DType::F32);
  Tensor b = Tensor::empty(ctx, {0, 2}, DType::F32);
  Tensor out = random_tensor(ctx, {3, 2}, DType::F32, 7);
  const std::vector<double> before = values(out);
  coat::cpu::matmul(a, b, false, false, out, 1.0f, 0.5f);
  for (int64_t i = 0; i < out.numel(); ++i) EXPECT_DOUBLE_EQ(get(out, i), 0.5 * before[i]);
  coat::cpu::matmul(a, b, false, false, out, 1.0f, 0.0f);
  for (int64_t i = 0; i < out.numel(); ++i) EXPECT_EQ(get(out, i), 0.0);
}

TEST(CpuGemm, RejectsBadArguments) {
  auto ctx = std::make_shared<coat::CpuContext>();
  Tensor a = random_tensor(ctx, {3, 4}, DType::F32, 1);
  Tensor b = random_tensor(ctx, {5, 6}, DType::F32, 2);
  Tensor out = Tensor::empty(ctx, {3, 6}, DType::F32);
  try {
    coat::cpu::matmul(a, b, false, false, out);
    FAIL() << "expected InvalidArgument";
  } catch (const coat::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("[matmul] shapes (3,4) and (5,6) do not match"), std::string::npos)
        << e.what();
  }
  Tensor b2 = random_tensor(ctx, {4, 6}, DType::F32, 3);
  Tensor wrong_out = Tensor::empty(ctx, {6, 3}, DType::F32);
  EXPECT_THROW(coat::cpu::matmul(a, b2, false, false, wrong_out), coat::InvalidArgument);
  Tensor b_bf16 = random_tensor(ctx, {4, 6}, DType::BF16, 4);
  EXPECT_THROW(coat::cpu::matmul(a, b_bf16, false, false, out), coat::InvalidArgument);
  Tensor out_bf16 = Tensor::empty(ctx, {3, 6}, DType::BF16);
  EXPECT_THROW(coat::cpu::matmul(a, b2, false, false, out_bf16), coat::NotImplemented);
  Tensor vec = random_tensor(ctx, {4}, DType::F32, 5);
  EXPECT_THROW(coat::cpu::matmul(a, vec, false, false, out), coat::InvalidArgument);
  Tensor not_contiguous = random_tensor(ctx, {6, 4}, DType::F32, 6).transpose(0, 1);
  EXPECT_THROW(coat::cpu::matmul(a, not_contiguous, false, false, out), coat::InvalidArgument);
}

}  // namespace
