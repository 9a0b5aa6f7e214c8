// ops::matmul_fp8_block on the CPU backend (the reference of the 128-block-scaled FP8 GEMM): against a plain
// double matmul of the dequantized operands for every allowed format pair and both output dtypes, with
// scales that differ per block, for a 128x128-blocked b (a weight: "1D x 2D") and a 1x128-blocked b (a weight
// gradient's operand: "1D x 1D"); hand-computed cases of both; a changed block scale moves exactly its rows;
// accumulate mode; empty dimensions; argument errors.
//
// Tolerance: exact bits. The test dequantizes each operand itself, reading the scale tensors through the
// documented cuBLASLt layouts (spelled out here, independently of block_scale_layout.h): value =
// decode(code) * double(scale_inv), exact in double (4 + 24 significant bits at most); it then sums the
// double products in order k = 0..K-1 and rounds once to the output dtype, which is the documented
// definition of the CPU op. Both are compiled with -ffp-contract=off, so any differing bit is a bug (in the
// layout above all).
#include <gtest/gtest.h>

#include "expect_error.h"
#include "fp8_reference.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/matmul_fp8_block.h"
#include "coat/ops/quantize_block.h"
#include "coat/ops/runtime.h"

namespace coat {
namespace {

int64_t round_up4(int64_t v) {
  return (v + 3) / 4 * 4;
}

class MatmulFp8BlockCpu : public ::testing::Test {
 protected:
  ContextPtr cpu = std::make_shared<CpuContext>();

  // Random non-zero values with magnitudes spread over 2^-4 .. 2^4 times a factor that differs per row and
  // per 128-column group (so every 1x128 group and 128x128 block gets its own scale), both signs.
  Tensor random(int64_t rows, int64_t cols, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> log_mag(-4.0, 4.0);
    std::bernoulli_distribution negative(0.5);
    std::vector<double> v(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const double factor = static_cast<double>((r % 7) + 3 * (c / 128) % 5) - 3.0;
        v[static_cast<size_t>(r * cols + c)] = (negative(rng) ? -1.0 : 1.0) * std::exp2(log_mag(rng) + factor);
      }
    }
    return ops::from_vector(cpu, {rows, cols}, DType::F32, v);
  }

  // q's codes times the scale_inv entry at scale_index(row, col), in double (exact).
  template <typename ScaleIndex>
  static std::vector<double> dequantized(const ops::Fp8Blocked& q, ScaleIndex scale_index) {
    const int64_t rows = q.codes.size(0), cols = q.codes.size(1);
    std::vector<double> out = test::decode_fp8(q.codes);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        out[static_cast<size_t>(r * cols + c)] *= static_cast<double>(q.scale_inv.data<float>()[scale_index(r, c)]);
    return out;
  }

  // a [M,K], 1x128: scale of (m, k) at (k/128) * round_up(M,4) + m.
  static std::vector<double> dequantized_a(const ops::Fp8Blocked& a) {
    const int64_t ld = round_up4(a.codes.size(0));
    return dequantized(a, [ld](int64_t i, int64_t p) { return (p / 128) * ld + i; });
  }

  // b [N,K], 128x128: scale of (n, k) at (n/128) * round_up(K/128,4) + k/128; 1x128: as a, with N rows.
  static std::vector<double> dequantized_b(const ops::Fp8Blocked& b) {
    if (b.block_rows == 1) return dequantized_a(b);
    const int64_t ld = round_up4(b.codes.size(1) / 128);
    return dequantized(b, [ld](int64_t j, int64_t p) { return (j / 128) * ld + p / 128; });
  }

  // The unrounded double values (c + sum_k A[m,k] B[n,k]) of the product of the dequantized operands.
  static std::vector<double> reference(const ops::Fp8Blocked& a, const ops::Fp8Blocked& b, const Tensor* c) {
    const int64_t m = a.codes.size(0), k = a.codes.size(1), n = b.codes.size(0);
    const std::vector<double> base = c != nullptr ? test::f32_or_bf16_values(*c) : std::vector<double>();
    return test::matmul_nt_reference(dequantized_a(a), dequantized_b(b), m, n, k, 1.0, c != nullptr ? &base : nullptr);
  }
};

TEST_F(MatmulFp8BlockCpu, MatchesDoubleMatmulOfDequantizedOperands) {
  struct Mnk {
    int64_t m, n, k;
  };
  const Mnk shapes[] = {{4, 128, 128}, {12, 256, 384}, {8, 128, 640}};
  uint32_t seed = 1;
  for (const test::Fp8Pair& p : test::kFp8Pairs) {
    for (const Mnk& s : shapes) {
      const ops::Fp8Blocked a = ops::quantize_1x128(random(s.m, s.k, seed++), p.a);
      const ops::Fp8Blocked b = ops::quantize_128x128(random(s.n, s.k, seed++), p.b);
      // The test's own dequantization agrees with ops::dequantize (rounded to f32): the layouts match.
      const Tensor da = ops::dequantize(a), db = ops::dequantize(b);
      const std::vector<double> ea = dequantized_a(a), eb = dequantized_b(b);
      for (int64_t i = 0; i < da.numel(); ++i) ASSERT_EQ(da.data<float>()[i], static_cast<float>(ea[static_cast<size_t>(i)]));
      for (int64_t i = 0; i < db.numel(); ++i) ASSERT_EQ(db.data<float>()[i], static_cast<float>(eb[static_cast<size_t>(i)]));

      const std::vector<double> ref = reference(a, b, nullptr);
      for (DType od : {DType::BF16, DType::F32}) {
        const std::string what = std::string(dtype_name(p.a)) + " x " + std::string(dtype_name(p.b)) + " -> " +
                                 std::string(dtype_name(od)) + " M=" + std::to_string(s.m) +
                                 " N=" + std::to_string(s.n) + " K=" + std::to_string(s.k);
        const Tensor out = ops::matmul_fp8_block(a, b, od);
        ASSERT_EQ(out.shape(), Shape({s.m, s.n}));
        ASSERT_EQ(out.dtype(), od);
        test::expect_bitwise(out, ref, what);
      }
    }
  }
}

TEST_F(MatmulFp8BlockCpu, RowwiseBMatchesDoubleMatmulOfDequantizedOperands) {
  // b 1x128-quantized: M and N multiples of 128 (see Errors for 132).
  struct Mnk {
    int64_t m, n, k;
  };
  const Mnk shapes[] = {{128, 128, 128}, {256, 384, 384}, {128, 256, 256}};
  uint32_t seed = 200;
  for (const test::Fp8Pair& p : test::kFp8Pairs) {
    for (const Mnk& s : shapes) {
      const ops::Fp8Blocked a = ops::quantize_1x128(random(s.m, s.k, seed++), p.a);
      const ops::Fp8Blocked b = ops::quantize_1x128(random(s.n, s.k, seed++), p.b);
      const Tensor db = ops::dequantize(b);
      const std::vector<double> eb = dequantized_b(b);
      for (int64_t i = 0; i < db.numel(); ++i) ASSERT_EQ(db.data<float>()[i], static_cast<float>(eb[static_cast<size_t>(i)]));
      const std::vector<double> ref = reference(a, b, nullptr);
      for (DType od : {DType::BF16, DType::F32}) {
        const std::string what = "1x128 b: " + std::string(dtype_name(p.a)) + " x " + std::string(dtype_name(p.b)) +
                                 " -> " + std::string(dtype_name(od)) + " M=" + std::to_string(s.m) +
                                 " N=" + std::to_string(s.n) + " K=" + std::to_string(s.k);
        const Tensor out = ops::matmul_fp8_block(a, b, od);
        ASSERT_EQ(out.shape(), Shape({s.m, s.n}));
        test::expect_bitwise(out, ref, what);
      }
    }
  }
}

TEST_F(MatmulFp8BlockCpu, RowwiseBHandComputed) {
  // M = 128, N = 128, K = 256, both 1x128. a: codes 1.0 (E4M3 0x38), scale_inv (m, kb) = (m % 4 + 1)(kb + 1) at
  // kb * 128 + m; b: codes 0.5 (0x30), scale_inv (n, kb) = (n % 8 + 1) * 2^-kb at kb * 128 + n (ld = N).
  // out[m, n] = sum_kb 128 (m % 4 + 1)(kb + 1) 0.5 (n % 8 + 1) 2^-kb = 128 (m % 4 + 1)(n % 8 + 1): exact in BF16.
  ops::Fp8Blocked a{Tensor::empty(cpu, {128, 256}, DType::E4M3), Tensor::empty(cpu, {2, 128}, DType::F32), 1, 128};
  ops::Fp8Blocked b{Tensor::empty(cpu, {128, 256}, DType::E4M3), Tensor::empty(cpu, {2, 128}, DType::F32), 1, 128};
  std::memset(a.codes.data_ptr(), 0x38, a.codes.nbytes());
  std::memset(b.codes.data_ptr(), 0x30, b.codes.nbytes());
  for (int64_t kb = 0; kb < 2; ++kb) {
    for (int64_t m = 0; m < 128; ++m) a.scale_inv.data<float>()[kb * 128 + m] = static_cast<float>((m % 4 + 1) * (kb + 1));
    for (int64_t n = 0; n < 128; ++n)
      b.scale_inv.data<float>()[kb * 128 + n] = static_cast<float>(n % 8 + 1) * (kb == 0 ? 1.0f : 0.5f);
  }
  for (DType od : {DType::F32, DType::BF16}) {
    const std::vector<double> v = ops::to_double_vector(ops::matmul_fp8_block(a, b, od));
    for (int64_t m = 0; m < 128; ++m)
      for (int64_t n = 0; n < 128; ++n)
        ASSERT_EQ(v[static_cast<size_t>(m * 128 + n)], 128.0 * static_cast<double>((m % 4 + 1) * (n % 8 + 1)))
            << m << "," << n;
  }
}

TEST_F(MatmulFp8BlockCpu, HandComputed) {
  // M = 4, N = 128, K = 256. a: every code 1.0 (E4M3 0x38), scale_inv of (m, kb) = (m + 1) * (kb + 1).
  // b: every code 0.5 (0x30), scale_inv of (0, kb) = 0.25 * (kb + 1).
  // out[m, n] = sum_kb 128 * (m + 1)(kb + 1) * 0.125 (kb + 1) = 16 (m + 1) (1 + 4) = 80 (m + 1).
  ops::Fp8Blocked a{Tensor::empty(cpu, {4, 256}, DType::E4M3), Tensor::empty(cpu, {2, 4}, DType::F32), 1, 128};
  ops::Fp8Blocked b{Tensor::empty(cpu, {128, 256}, DType::E4M3), Tensor::empty(cpu, {1, 4}, DType::F32), 128, 128};
  std::memset(a.codes.data_ptr(), 0x38, a.codes.nbytes());
  std::memset(b.codes.data_ptr(), 0x30, b.codes.nbytes());
  for (int64_t kb = 0; kb < 2; ++kb) {
    for (int64_t m = 0; m < 4; ++m) a.scale_inv.data<float>()[kb * 4 + m] = static_cast<float>((m + 1) * (kb + 1));
  }
  const float b_scales[4] = {0.25f, 0.5f, 1.0f, 1.0f};  // the last two: padding, never read
  std::memcpy(b.scale_inv.data_ptr(), b_scales, sizeof(b_scales));
  for (DType od : {DType::F32, DType::BF16}) {
    const Tensor out = ops::matmul_fp8_block(a, b, od);
    const std::vector<double> v = ops::to_double_vector(out);
    for (int64_t m = 0; m < 4; ++m)
      for (int64_t n = 0; n < 128; ++n) ASSERT_EQ(v[static_cast<size_t>(m * 128 + n)], 80.0 * static_cast<double>(m + 1));
  }
}

TEST_F(MatmulFp8BlockCpu, EachBlockScaleMovesItsOwnOutputs) {
  const int64_t m = 8, n = 256, k = 384;
  ops::Fp8Blocked a = ops::quantize_1x128(random(m, k, 51), DType::E4M3);
  ops::Fp8Blocked b = ops::quantize_128x128(random(n, k, 52), DType::E4M3);
  const Tensor base = ops::matmul_fp8_block(a, b, DType::F32);
  // Doubling the scale of a's group (row 5, kb 1) changes row 5 only; of b's block (1, 2) columns 128.. only.
  a.scale_inv.data<float>()[1 * 8 + 5] *= 2.0f;
  const Tensor moved_a = ops::matmul_fp8_block(a, b, DType::F32);
  test::expect_bitwise(moved_a, reference(a, b, nullptr), "changed a scale");
  b.scale_inv.data<float>()[1 * 4 + 2] *= 2.0f;
  const Tensor moved_b = ops::matmul_fp8_block(a, b, DType::F32);
  test::expect_bitwise(moved_b, reference(a, b, nullptr), "changed b scale");
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const int64_t idx = i * n + j;
      EXPECT_EQ(moved_a.data<float>()[idx] != base.data<float>()[idx], i == 5) << i << "," << j;
      EXPECT_EQ(moved_b.data<float>()[idx] != moved_a.data<float>()[idx], j >= 128) << i << "," << j;
    }
  }
}

TEST_F(MatmulFp8BlockCpu, AccumulateAddsToOut) {
  uint32_t seed = 100;
  for (const test::Fp8Pair& p : test::kFp8Pairs) {
    const ops::Fp8Blocked a = ops::quantize_1x128(random(12, 256, seed++), p.a);
    const ops::Fp8Blocked b = ops::quantize_128x128(random(128, 256, seed++), p.b);
    for (DType od : {DType::BF16, DType::F32}) {
      std::mt19937 rng(seed++);
      std::uniform_real_distribution<double> u(-50.0, 50.0);
      std::vector<double> cv(12 * 128);
      for (double& x : cv) x = u(rng);
      const Tensor c = ops::from_vector(cpu, {12, 128}, od, cv);
      Tensor out = ops::clone(c);
      ops::matmul_fp8_block(a, b, out, /*accumulate=*/true);
      test::expect_bitwise(out, reference(a, b, &c), "accumulate " + std::string(dtype_name(od)));
      Tensor fresh = ops::full(cpu, {12, 128}, std::nan(""), od);  // accumulate = false overwrites
      ops::matmul_fp8_block(a, b, fresh);
      test::expect_bitwise(fresh, reference(a, b, nullptr), "overwrite " + std::string(dtype_name(od)));
    }
  }
}

TEST_F(MatmulFp8BlockCpu, EmptyDimensions) {
  const ops::Fp8Blocked a = ops::quantize_1x128(ops::zeros(cpu, {0, 128}, DType::F32), DType::E4M3);
  const ops::Fp8Blocked b = ops::quantize_128x128(random(128, 128, 7), DType::E4M3);
  EXPECT_EQ(ops::matmul_fp8_block(a, b, DType::F32).shape(), Shape({0, 128}));
  const ops::Fp8Blocked a0 = ops::quantize_1x128(ops::zeros(cpu, {4, 0}, DType::F32), DType::E4M3);
  const ops::Fp8Blocked b0 = ops::quantize_128x128(ops::zeros(cpu, {128, 0}, DType::F32), DType::E4M3);
  const Tensor z = ops::matmul_fp8_block(a0, b0, DType::F32);  // K = 0: an empty sum
  ASSERT_EQ(z.shape(), Shape({4, 128}));
  for (int64_t i = 0; i < z.numel(); ++i) EXPECT_EQ(z.data<float>()[i], 0.0f);
}

TEST_F(MatmulFp8BlockCpu, Errors) {
  using test::expect_error_containing;
  const ops::Fp8Blocked a = ops::quantize_1x128(random(4, 256, 21), DType::E4M3);
  const ops::Fp8Blocked b = ops::quantize_128x128(random(128, 256, 22), DType::E4M3);
  EXPECT_NO_THROW(ops::matmul_fp8_block(a, b));

  // Formats.
  const ops::Fp8Blocked a5 = ops::quantize_1x128(random(4, 256, 23), DType::E5M2);
  const ops::Fp8Blocked b5 = ops::quantize_128x128(random(128, 256, 24), DType::E5M2);
  expect_error_containing([&] { ops::matmul_fp8_block(a5, b5); }, "both e5m2");
  EXPECT_NO_THROW(ops::matmul_fp8_block(a5, b));
  EXPECT_NO_THROW(ops::matmul_fp8_block(a, b5));

  ops::Fp8Blocked bad;
  // Block kinds: a must be 1x128 (cuBLASLt has no 128x128 x 128x128 product), b 1x128 or 128x128.
  const ops::Fp8Blocked w_as_a = ops::quantize_128x128(random(128, 256, 25), DType::E4M3);
  expect_error_containing([&] { ops::matmul_fp8_block(w_as_a, b); }, "operand a must be 1x128-quantized");
  const ops::Fp8Blocked x_as_b = ops::quantize_1x128(random(128, 256, 26), DType::E4M3);
  expect_error_containing([&] { ops::matmul_fp8_block(a, x_as_b); }, "M = 4");  // M too, with a 1x128 b
  EXPECT_NO_THROW(ops::matmul_fp8_block(ops::quantize_1x128(random(128, 256, 30), DType::E4M3), x_as_b));
  ops::Fp8Blocked odd_blocks = b;
  odd_blocks.block_rows = 64;
  expect_error_containing([&] { ops::matmul_fp8_block(a, odd_blocks); },
                          "operand b must be 1x128- or 128x128-quantized");
  // A 1x128-quantized b: M and N multiples of 128 (132 is a multiple of 4, which cuBLASLt still refuses), its
  // scales in the 1x128 layout.
  const ops::Fp8Blocked b6 = ops::quantize_1x128(random(6, 256, 29), DType::E4M3);
  expect_error_containing([&] { ops::matmul_fp8_block(a, b6); }, "N = 6");
  const ops::Fp8Blocked b132 = ops::quantize_1x128(random(132, 256, 31), DType::E4M3);
  expect_error_containing([&] { ops::matmul_fp8_block(a, b132); }, "N = 132");
  bad = x_as_b;
  bad.scale_inv = ops::zeros(cpu, {1, 4}, DType::F32);  // the 128x128 layout's shape
  expect_error_containing([&] { ops::matmul_fp8_block(a, bad); }, "operand b: scale_inv must be f32 of shape (2,128)");

  // Shapes: M a multiple of 4, K matching, scale tensors of the layout's shape.
  const ops::Fp8Blocked a6 = ops::quantize_1x128(random(6, 256, 27), DType::E4M3);
  expect_error_containing([&] { ops::matmul_fp8_block(a6, b); }, "M = 6");
  const ops::Fp8Blocked b384 = ops::quantize_128x128(random(128, 384, 28), DType::E4M3);
  expect_error_containing([&] { ops::matmul_fp8_block(a, b384); }, "do not match");
  bad = a;
  bad.scale_inv = ops::zeros(cpu, {4, 2}, DType::F32);  // the row-major [M, K/128] layout, not cuBLASLt's
  expect_error_containing([&] { ops::matmul_fp8_block(bad, b); }, "operand a: scale_inv must be f32 of shape (2,4)");
  bad = b;
  bad.scale_inv = ops::zeros(cpu, {1, 2}, DType::F32);  // K blocks not padded to 4
  expect_error_containing([&] { ops::matmul_fp8_block(a, bad); }, "operand b: scale_inv must be f32 of shape (1,4)");
  bad = b;
  bad.codes = Tensor::empty(cpu, {64, 256}, DType::E4M3);  // N not a multiple of 128
  expect_error_containing([&] { ops::matmul_fp8_block(a, bad); }, "multiples of 128");
  bad = b;
  bad.codes = ops::zeros(cpu, {128, 256}, DType::BF16);
  expect_error_containing([&] { ops::matmul_fp8_block(a, bad); }, "operand b: codes have dtype bf16");

  // Output dtype and shape.
  expect_error_containing([&] { ops::matmul_fp8_block(a, b, DType::F16); }, "output dtype f16");
  Tensor out = Tensor::empty(cpu, {4, 127}, DType::F32);
  expect_error_containing([&] { ops::matmul_fp8_block(a, b, out); }, "output shape");
}

}  // namespace
}  // namespace coat
