// ops::matmul_fp8 on the CPU backend (the reference of the FP8 GEMM): against an independent FP64 computation
// from the decoded codes, for every allowed format pair and both output dtypes; scales; accumulate mode; a
// hand-computed case; argument errors that name the operand.
//
// Tolerance: exact bits. The reference here decodes each code with the float_formats decoders, multiplies in
// double (a product of two FP8 values is exact), sums in the same order k = 0..K-1, multiplies by
// double(sa) * double(sb) (exact) and rounds once to the output dtype, which is the documented definition of
// the CPU op; both are compiled with -ffp-contract=off, so any differing bit is a bug.
#include <gtest/gtest.h>

#include "expect_error.h"
#include "fp8_reference.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "coat/core/float_formats.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/matmul_fp8.h"
#include "coat/ops/quantize.h"
#include "coat/ops/runtime.h"

namespace coat {
namespace {

class MatmulFp8Cpu : public ::testing::Test {
 protected:
  ContextPtr cpu = std::make_shared<CpuContext>();

  // Random non-zero values of mixed magnitude (1e-3 .. 1e1, both signs), quantized per tensor to `fmt`.
  ops::Fp8PerTensor random_fp8(const Shape& shape, DType fmt, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> log_mag(-3.0, 1.0);
    std::bernoulli_distribution negative(0.5);
    std::vector<double> v(static_cast<size_t>(shape[0] * shape[1]));
    for (double& x : v) x = (negative(rng) ? -1.0 : 1.0) * std::pow(10.0, log_mag(rng));
    const Tensor x = ops::from_vector(cpu, shape, DType::F32, v);
    return ops::quantize_per_tensor(x, fmt);
  }

  Tensor random_out(const Shape& shape, DType dtype, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> u(-50.0, 50.0);
    std::vector<double> v(static_cast<size_t>(shape[0] * shape[1]));
    for (double& x : v) x = u(rng);
    return ops::from_vector(cpu, shape, dtype, v);
  }

  // The unrounded FP64 values (c + s * sum) of the product.
  static std::vector<double> reference(const ops::Fp8PerTensor& a, const ops::Fp8PerTensor& b, const Tensor* c) {
    const int64_t m = a.codes.size(0), k = a.codes.size(1), n = b.codes.size(0);
    const double s = static_cast<double>(a.scale_inv.data<float>()[0]) * static_cast<double>(b.scale_inv.data<float>()[0]);
    const std::vector<double> base = c != nullptr ? test::f32_or_bf16_values(*c) : std::vector<double>();
    return test::matmul_nt_reference(test::decode_fp8(a.codes), test::decode_fp8(b.codes), m, n, k, s,
                                     c != nullptr ? &base : nullptr);
  }
};

TEST_F(MatmulFp8Cpu, MatchesFp64ReferenceBitwise) {
  const Shape shapes[][2] = {{{5, 48}, {32, 48}}, {{33, 64}, {16, 64}}, {{1, 16}, {48, 16}}};
  uint32_t seed = 1;
  for (const test::Fp8Pair& p : test::kFp8Pairs) {
    for (const auto& sh : shapes) {
      const ops::Fp8PerTensor a = random_fp8(sh[0], p.a, seed++);
      const ops::Fp8PerTensor b = random_fp8(sh[1], p.b, seed++);
      const std::vector<double> ref = reference(a, b, nullptr);
      for (DType od : {DType::BF16, DType::F32}) {
        const std::string what = std::string(dtype_name(p.a)) + " x " + std::string(dtype_name(p.b)) + " -> " + std::string(dtype_name(od)) +
                                 " " + shape_str(sh[0]) + " " + shape_str(sh[1]);
        const Tensor out = ops::matmul_fp8(a, b, od);
        ASSERT_EQ(out.shape(), Shape({sh[0][0], sh[1][0]}));
        ASSERT_EQ(out.dtype(), od);
        test::expect_bitwise(out, ref, what);
        // fast_accum is a cuBLASLt setting: the CPU reference is the same with it.
        test::expect_bitwise(ops::matmul_fp8(a, b, od, /*fast_accum=*/true), ref, what + " fast_accum");
      }
    }
  }
}

TEST_F(MatmulFp8Cpu, HandComputedWithScales) {
  // a = 1.0 everywhere (E4M3 0x38), b row j = 0.5 (E4M3 0x30) for even j, -2.0 (0xC0) for odd j; K = 16.
  // sum = 16 * 0.5 = 8 or 16 * -2 = -32; scales 0.25 and 3 -> 6 or -24 (exact in bf16 and f32).
  Tensor ac = Tensor::empty(cpu, {2, 16}, DType::E4M3);
  Tensor bc = Tensor::empty(cpu, {16, 16}, DType::E4M3);
  std::memset(ac.data_ptr(), 0x38, static_cast<size_t>(ac.nbytes()));
  for (int64_t j = 0; j < 16; ++j)
    std::memset(bc.data<uint8_t>() + j * 16, (j % 2 == 0) ? 0x30 : 0xC0, 16);
  ASSERT_EQ(e4m3_to_float(0x38), 1.0f);
  ASSERT_EQ(e4m3_to_float(0x30), 0.5f);
  ASSERT_EQ(e4m3_to_float(0xC0), -2.0f);
  ops::Fp8PerTensor a{ac, ops::full(cpu, {1}, 4.0, DType::F32), ops::full(cpu, {1}, 0.25, DType::F32), Tensor()};
  ops::Fp8PerTensor b{bc, ops::full(cpu, {1}, 1.0 / 3.0, DType::F32), ops::full(cpu, {1}, 3.0, DType::F32), Tensor()};
  const Tensor out = ops::matmul_fp8(a, b, DType::F32);
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 16; ++j) EXPECT_EQ(out.data<float>()[i * 16 + j], j % 2 == 0 ? 6.0f : -24.0f);

  // Only scale_inv (the dequantisation factor) matters; doubling it doubles the result exactly.
  a.scale = ops::full(cpu, {1}, 123.0, DType::F32);
  b.scale_inv = ops::full(cpu, {1}, 6.0, DType::F32);
  const Tensor out2 = ops::matmul_fp8(a, b, DType::BF16);
  for (int64_t j = 0; j < 16; ++j)
    EXPECT_EQ(bf16_to_float(out2.data<uint16_t>()[j]), j % 2 == 0 ? 12.0f : -48.0f);
}

TEST_F(MatmulFp8Cpu, ScalesAreApplied) {
  const ops::Fp8PerTensor a = random_fp8({7, 32}, DType::E4M3, 11);
  ops::Fp8PerTensor b = random_fp8({16, 32}, DType::E5M2, 12);
  EXPECT_NE(a.scale_inv.data<float>()[0], 1.0f);  // quantization picked real scales
  EXPECT_NE(b.scale_inv.data<float>()[0], 1.0f);
  test::expect_bitwise(ops::matmul_fp8(a, b, DType::F32), reference(a, b, nullptr), "quantized scales");
  b.scale_inv = ops::full(cpu, {1}, 0.0078125, DType::F32);  // a different scale: a different (right) result
  test::expect_bitwise(ops::matmul_fp8(a, b, DType::F32), reference(a, b, nullptr), "replaced scale_inv");
}

TEST_F(MatmulFp8Cpu, AccumulateAddsToOut) {
  uint32_t seed = 100;
  for (const test::Fp8Pair& p : test::kFp8Pairs) {
    const ops::Fp8PerTensor a = random_fp8({9, 32}, p.a, seed++);
    const ops::Fp8PerTensor b = random_fp8({48, 32}, p.b, seed++);
    for (DType od : {DType::BF16, DType::F32}) {
      const Tensor c = random_out({9, 48}, od, seed++);
      Tensor out = ops::clone(c);
      ops::matmul_fp8(a, b, out, /*accumulate=*/true);
      test::expect_bitwise(out, reference(a, b, &c), "accumulate " + std::string(dtype_name(od)));
      // accumulate = false overwrites (even NaN garbage does not leak in).
      Tensor fresh = ops::full(cpu, {9, 48}, std::nan(""), od);
      ops::matmul_fp8(a, b, fresh);
      test::expect_bitwise(fresh, reference(a, b, nullptr), "overwrite " + std::string(dtype_name(od)));
    }
  }
}

TEST_F(MatmulFp8Cpu, EmptyDimensions) {
  const ops::Fp8PerTensor a = random_fp8({3, 16}, DType::E4M3, 7);
  ops::Fp8PerTensor b = a;
  b.codes = Tensor::empty(cpu, {0, 16}, DType::E4M3);
  EXPECT_EQ(ops::matmul_fp8(a, b, DType::F32).shape(), Shape({3, 0}));
  ops::Fp8PerTensor a0 = a, b0 = a;
  a0.codes = Tensor::empty(cpu, {3, 0}, DType::E4M3);
  b0.codes = Tensor::empty(cpu, {16, 0}, DType::E4M3);
  const Tensor z = ops::matmul_fp8(a0, b0, DType::F32);  // K = 0: an empty sum
  for (int64_t i = 0; i < z.numel(); ++i) EXPECT_EQ(z.data<float>()[i], 0.0f);
}

TEST_F(MatmulFp8Cpu, ErrorsNameTheOperand) {
  const ops::Fp8PerTensor a = random_fp8({4, 32}, DType::E4M3, 21);
  const ops::Fp8PerTensor b = random_fp8({16, 32}, DType::E4M3, 22);
  const ops::Fp8PerTensor a5 = random_fp8({4, 32}, DType::E5M2, 23);
  const ops::Fp8PerTensor b5 = random_fp8({16, 32}, DType::E5M2, 24);
  using test::expect_error_containing;
  expect_error_containing([&] { ops::matmul_fp8(a5, b5); }, "both e5m2");
  EXPECT_NO_THROW(ops::matmul_fp8(a5, b));
  EXPECT_NO_THROW(ops::matmul_fp8(a, b5));

  // Shapes: K mismatch, K and N not multiples of 16 (M is free).
  const ops::Fp8PerTensor b48 = random_fp8({16, 48}, DType::E4M3, 25);
  expect_error_containing([&] { ops::matmul_fp8(a, b48); }, "do not match");
  const ops::Fp8PerTensor ak = random_fp8({4, 40}, DType::E4M3, 26);
  const ops::Fp8PerTensor bk = random_fp8({16, 40}, DType::E4M3, 27);
  expect_error_containing([&] { ops::matmul_fp8(ak, bk); }, "K = 40");
  const ops::Fp8PerTensor bn = random_fp8({24, 32}, DType::E4M3, 28);
  expect_error_containing([&] { ops::matmul_fp8(a, bn); }, "N = 24");
  EXPECT_NO_THROW(ops::matmul_fp8(random_fp8({5, 32}, DType::E4M3, 29), b));

  // Codes that are not FP8, not 2-D, not contiguous; scales missing or of the wrong type.
  ops::Fp8PerTensor bad = b;
  bad.codes = ops::zeros(cpu, {16, 32}, DType::BF16);
  expect_error_containing([&] { ops::matmul_fp8(a, bad); }, "operand b: codes have dtype bf16");
  expect_error_containing([&] { ops::matmul_fp8(bad, b); }, "operand a: codes have dtype bf16");
  bad = a;
  bad.codes = Tensor::empty(cpu, {4, 32, 1}, DType::E4M3);
  expect_error_containing([&] { ops::matmul_fp8(bad, b); }, "operand a: codes must be 2-D");
  const ops::Fp8PerTensor at = ops::quantize_per_tensor(ops::zeros(cpu, {32, 16}, DType::F32), DType::E4M3);
  bad = at;
  bad.codes = at.codes.transpose(0, 1);  // [16,32] view with K strided
  expect_error_containing([&] { ops::matmul_fp8(a, bad); }, "operand b: codes must be contiguous");
  bad = b;
  bad.scale_inv = Tensor();
  expect_error_containing([&] { ops::matmul_fp8(a, bad); }, "operand b: scale_inv");
  bad = a;
  bad.scale_inv = ops::full(cpu, {2}, 1.0, DType::F32);
  expect_error_containing([&] { ops::matmul_fp8(bad, b); }, "operand a: scale_inv");

  // Output dtype and shape.
  expect_error_containing([&] { ops::matmul_fp8(a, b, DType::F16); }, "output dtype f16");
  expect_error_containing([&] { ops::matmul_fp8(a, b, DType::E4M3); }, "output dtype e4m3");
  Tensor out = Tensor::empty(cpu, {4, 15}, DType::F32);
  expect_error_containing([&] { ops::matmul_fp8(a, b, out); }, "output shape");
  Tensor out16 = Tensor::empty(cpu, {4, 16}, DType::F16);
  expect_error_containing([&] { ops::matmul_fp8(a, b, out16); }, "output dtype f16");
}

}  // namespace
}  // namespace coat
