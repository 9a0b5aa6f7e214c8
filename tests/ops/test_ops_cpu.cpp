// The device-agnostic ops on the CPU backend: semantics, conversions and error messages.
#include <gtest/gtest.h>

#include "expect_error.h"

#include <cmath>
#include <random>

#include "coat/core/float_formats.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/elementwise.h"
#include "coat/ops/matmul.h"
#include "coat/ops/quantize.h"
#include "coat/ops/reduce.h"
#include "coat/ops/runtime.h"

namespace coat {
namespace {

ContextPtr cpu() { return ops::make_context(Device::cpu()); }

std::vector<double> random_values(size_t n, uint32_t seed, double scale = 1.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist(0.0, scale);
  std::vector<double> v(n);
  for (double& x : v) x = dist(gen);
  return v;
}


TEST(OpsCopy, ContiguousOfPermutedView) {
  auto ctx = cpu();
  Tensor t = ops::arange(ctx, 24, DType::F32).reshape({2, 3, 4});
  Tensor p = ops::contiguous(t.permute({2, 0, 1}));
  ASSERT_TRUE(p.is_contiguous());
  const std::vector<double> v = ops::to_double_vector(p);
  for (int64_t k = 0; k < 4; ++k)
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < 3; ++j) EXPECT_EQ(v[(k * 2 + i) * 3 + j], i * 12 + j * 4 + k);
  Tensor same = ops::contiguous(t);
  EXPECT_TRUE(same.shares_storage_with(t));
}

TEST(OpsCopy, CastRoundsToNearestEven) {
  auto ctx = cpu();
  const std::vector<double> values = random_values(4096, 1, 100.0);
  Tensor f32 = ops::from_vector(ctx, {4096}, DType::F32, values);
  const std::vector<uint8_t> bf16 = ops::to_bytes(ops::cast(f32, DType::BF16));
  const std::vector<uint8_t> e4m3 = ops::to_bytes(ops::cast(f32, DType::E4M3));
  const std::vector<uint8_t> e5m2_nosat = ops::to_bytes(ops::cast(f32, DType::E5M2, Fp8Saturation::NoSaturate));
  for (size_t i = 0; i < values.size(); ++i) {
    const float x = static_cast<float>(values[i]);
    uint16_t b;
    std::memcpy(&b, &bf16[2 * i], 2);
    EXPECT_EQ(b, float_to_bf16(x));
    EXPECT_EQ(e4m3[i], float_to_e4m3(x));
    EXPECT_EQ(e5m2_nosat[i], float_to_e5m2(x, Fp8Saturation::NoSaturate));
  }
}

TEST(OpsCopy, CastSaturatesFp8AndIntegers) {
  auto ctx = cpu();
  Tensor big = ops::from_vector(ctx, {4}, DType::F32, std::vector<double>{1000.0, -1e6, 3.7, -2.5});
  EXPECT_EQ(ops::to_double_vector(ops::cast(big, DType::E4M3)), (std::vector<double>{448, -448, 3.75, -2.5}));
  const std::vector<double> nosat = ops::to_double_vector(ops::cast(big, DType::E4M3, Fp8Saturation::NoSaturate));
  EXPECT_TRUE(std::isnan(nosat[0]) && std::isnan(nosat[1]));
  EXPECT_EQ(ops::to_double_vector(ops::cast(big, DType::U8)), (std::vector<double>{255, 0, 3, 0}));
  EXPECT_EQ(ops::to_double_vector(ops::cast(big, DType::I32)), (std::vector<double>{1000, -1000000, 3, -2}));
}

TEST(OpsCopy, IntegerCastsAreExact) {
  auto ctx = cpu();
  Tensor t = Tensor::empty(ctx, {2}, DType::I64);
  t.data<int64_t>()[0] = (int64_t{1} << 60) + 1;  // not representable in double
  t.data<int64_t>()[1] = -7;
  Tensor back = ops::cast(ops::cast(t, DType::I64), DType::I64);
  EXPECT_EQ(back.data<int64_t>()[0], (int64_t{1} << 60) + 1);
  Tensor u32 = ops::cast(t, DType::U32);
  EXPECT_EQ(u32.data<uint32_t>()[1], static_cast<uint32_t>(-7));
}

TEST(OpsCopy, CopyIntoStridedDestination) {
  auto ctx = cpu();
  Tensor dst = ops::zeros(ctx, {3, 4}, DType::BF16);
  Tensor column = dst.slice(1, 1, 2);
  ops::copy_(column, ops::from_vector(ctx, {3, 1}, DType::F32, std::vector<double>{1, 2, 3}));
  EXPECT_EQ(ops::to_double_vector(dst), (std::vector<double>{0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0}));
  test::expect_error_containing([&] { ops::copy_(dst, column); }, "[copy] destination shape (3,4) differs from source shape (3,1)");
}

TEST(OpsCreation, FillsAndArange) {
  auto ctx = cpu();
  EXPECT_EQ(ops::to_double_vector(ops::full(ctx, {3}, 2.5, DType::F16)), (std::vector<double>{2.5, 2.5, 2.5}));
  EXPECT_EQ(ops::to_double_vector(ops::arange(ctx, 4, DType::I32, 10, -3)), (std::vector<double>{10, 7, 4, 1}));
  Tensor t = ops::zeros(ctx, {2, 3}, DType::F32, MemoryCategory::Gradients);
  EXPECT_EQ(ctx->allocator().memory_report().current(MemoryCategory::Gradients), 256u);
  Tensor row = t.select(0, 1);
  ops::fill_(row, 7.0);
  EXPECT_EQ(ops::to_double_vector(t), (std::vector<double>{0, 0, 0, 7, 7, 7}));
}

TEST(OpsCreation, RandomFillsAreCounterBased) {
  auto ctx = cpu();
  RandomGenerator whole{1234, 0};
  Tensor all = Tensor::empty(ctx, {1000}, DType::F32);
  ops::normal_(all, whole);
  EXPECT_EQ(whole.offset, 1000u);
  // The same numbers drawn in two pieces with one generator.
  RandomGenerator split{1234, 0};
  Tensor a = Tensor::empty(ctx, {400}, DType::F32), b = Tensor::empty(ctx, {600}, DType::F32);
  ops::normal_(a, split);
  ops::normal_(b, split);
  const std::vector<double> va = ops::to_double_vector(a), vb = ops::to_double_vector(b),
                            v = ops::to_double_vector(all);
  for (size_t i = 0; i < 400; ++i) EXPECT_EQ(v[i], va[i]);
  for (size_t i = 0; i < 600; ++i) EXPECT_EQ(v[400 + i], vb[i]);
  // BF16 fills are the F32 numbers rounded.
  RandomGenerator again{1234, 0};
  Tensor h = Tensor::empty(ctx, {1000}, DType::BF16);
  ops::normal_(h, again);
  const std::vector<double> vh = ops::to_double_vector(h);
  for (size_t i = 0; i < 1000; ++i) EXPECT_EQ(vh[i], bf16_to_float(float_to_bf16(static_cast<float>(v[i]))));
  RandomGenerator u{7, 0};
  Tensor uni = Tensor::empty(ctx, {1000}, DType::F32);
  ops::uniform_(uni, u, -2.0f, 3.0f);
  for (double x : ops::to_double_vector(uni)) EXPECT_TRUE(x >= -2.0 && x < 3.0);
  Tensor ints = Tensor::empty(ctx, {4}, DType::I32);
  test::expect_error_containing([&] { ops::normal_(ints, u); }, "not a float type");
}

TEST(OpsElementwise, ArithmeticAndMessages) {
  auto ctx = cpu();
  const std::vector<double> va = random_values(300, 2), vb = random_values(300, 3);
  Tensor a = ops::from_vector(ctx, {300}, DType::F32, va), b = ops::from_vector(ctx, {300}, DType::F32, vb);
  const std::vector<double> sum = ops::to_double_vector(ops::add(a, b));
  const std::vector<double> prod = ops::to_double_vector(ops::mul(a, b));
  const std::vector<double> diff = ops::to_double_vector(ops::sub(a, b));
  const std::vector<double> scaled = ops::to_double_vector(ops::scale(a, 0.5));
  for (size_t i = 0; i < va.size(); ++i) {
    const float fa = static_cast<float>(va[i]), fb = static_cast<float>(vb[i]);
    EXPECT_EQ(sum[i], fa + fb);
    EXPECT_EQ(prod[i], fa * fb);
    EXPECT_EQ(diff[i], fa - fb);
    EXPECT_EQ(scaled[i], fa * 0.5f);
  }
  ops::add_(a, b);
  EXPECT_EQ(ops::to_double_vector(a), sum);
  Tensor c = ops::zeros(ctx, {3, 2}, DType::F32), d = ops::zeros(ctx, {2, 3}, DType::F32);
  test::expect_error_containing([&] { ops::add(c, d); }, "[add] shapes (3,2) and (2,3) do not match");
  test::expect_error_containing([&] { ops::mul(c, ops::zeros(ctx, {3, 2}, DType::BF16)); }, "[mul] dtypes f32 and bf16");
  test::expect_error_containing([&] { ops::scale(ops::zeros(ctx, {2}, DType::E4M3), 2.0); }, "[scale] dtype e4m3");
}

TEST(OpsReduce, SumsAndAmax) {
  auto ctx = cpu();
  const std::vector<double> v = random_values(2 * 500, 4);
  Tensor x = ops::from_vector(ctx, {2, 500}, DType::F64, v);
  double expected = 0.0, row0 = 0.0, max_abs = 0.0;
  for (size_t i = 0; i < v.size(); ++i) {
    expected += v[i];
    if (i < 500) row0 += v[i];
    max_abs = std::max(max_abs, std::abs(v[i]));
  }
  EXPECT_DOUBLE_EQ(ops::sum(x).item(), expected);
  EXPECT_DOUBLE_EQ(ops::sum_last_dim(x).data<double>()[0], row0);
  Tensor x32 = ops::cast(x, DType::F32);
  EXPECT_EQ(ops::amax(x32).item(), static_cast<float>(max_abs));
  Tensor g = ops::group_amax(x32, 100);
  EXPECT_EQ(g.shape(), Shape({2, 5}));
  test::expect_error_containing([&] { ops::group_amax(x32, 128); }, "not a multiple of the group size 128");
}

TEST(OpsMatmul, SmallProductAndShapeErrors) {
  auto ctx = cpu();
  Tensor a = ops::arange(ctx, 6, DType::F32).reshape({2, 3});  // [[0,1,2],[3,4,5]]
  Tensor b = ops::arange(ctx, 6, DType::F32, 1).reshape({3, 2});  // [[1,2],[3,4],[5,6]]
  EXPECT_EQ(ops::to_double_vector(ops::matmul(a, b)), (std::vector<double>{13, 16, 40, 52}));
  EXPECT_EQ(ops::to_double_vector(ops::matmul(a, a, false, true)), (std::vector<double>{5, 14, 14, 50}));
  test::expect_error_containing([&] { ops::matmul(a, a); }, "[matmul] shapes (2,3) and (2,3) do not match");
}

TEST(OpsQuantize, PerTensorAndPerGroupRoundTrip) {
  auto ctx = cpu();
  const std::vector<double> v = random_values(64 * 128, 5, 3.0);
  Tensor x = ops::from_vector(ctx, {64, 128}, DType::F32, v);
  ops::Fp8PerTensor q = ops::quantize_per_tensor(x, DType::E4M3, /*with_transpose=*/true);
  const std::vector<double> back = ops::to_double_vector(ops::dequantize(q));
  const double amax_value = ops::amax(x).item();
  const float scale = static_cast<float>(q.scale.item());
  EXPECT_EQ(scale, kE4M3Max / static_cast<float>(amax_value));
  EXPECT_EQ(static_cast<float>(q.scale_inv.item()), 1.0f / scale);
  // E4M3 keeps 3 mantissa bits: relative error <= 2^-4 above the subnormal range.
  for (size_t i = 0; i < v.size(); ++i) {
    if (std::abs(v[i]) * scale > 0.02) {
      EXPECT_LE(std::abs(back[i] - v[i]), std::abs(v[i]) / 16 + 1e-7) << i;
    }
  }
  // The transposed codes are the codes transposed.
  const std::vector<uint8_t> codes = ops::to_bytes(q.codes), codes_t = ops::to_bytes(q.codes_t);
  for (int64_t i = 0; i < 64; ++i)
    for (int64_t j = 0; j < 128; ++j) EXPECT_EQ(codes[i * 128 + j], codes_t[j * 64 + i]);
  ops::Fp8PerGroup g = ops::quantize_per_group(x, 16, DType::E5M2);
  EXPECT_EQ(g.scale_inv.shape(), Shape({64, 8}));
  const std::vector<double> gback = ops::to_double_vector(ops::dequantize(g, DType::BF16));
  for (size_t i = 0; i < v.size(); ++i) EXPECT_LE(std::abs(gback[i] - v[i]), std::abs(v[i]) / 8 * 1.02 + 1e-3);
  test::expect_error_containing([&] { ops::quantize_per_group(x, 48, DType::E4M3); }, "group size 48");
  test::expect_error_containing([&] { ops::quantize_per_tensor(x, DType::BF16); }, "not an FP8 format");
}

TEST(OpsRuntime, CudaContextWithoutCuda) {
  if (ops::cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is present; this checks the error without one";
  EXPECT_THROW(ops::make_context(Device::cuda(0)), Error);
}

}  // namespace
}  // namespace coat
