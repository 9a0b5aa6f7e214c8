// CUDA kernels behind the device-agnostic ops, each against the CPU backend on random, non-zero inputs.
// Conversions, fills, element-wise ops and random numbers run the same scalar code on both backends,
// so those comparisons are exact (byte-identical); sums differ only in summation order (tolerance below).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/elementwise.h"
#include "coat/ops/reduce.h"
#include "coat/ops/runtime.h"
#include "cuda_test_util.h"

namespace coat {
namespace {

class CudaOps : public test::CudaTest {};

std::vector<double> random_values(size_t n, uint32_t seed, double scale = 1.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist(0.0, scale);
  std::vector<double> v(n);
  for (double& x : v) x = dist(gen);
  return v;
}

// A dense sweep of float bit patterns: every 1031st pattern (covering every exponent, subnormals, infs,
// NaNs) plus FP8/BF16 rounding midpoints and their float neighbours.
Tensor float_sweep(const ContextPtr& ctx) {
  std::vector<uint32_t> bits;
  for (uint64_t b = 0; b <= 0xFFFFFFFFull; b += 1031) bits.push_back(static_cast<uint32_t>(b));
  for (int code = 0; code < 256; ++code) {
    for (float v : {e4m3_to_float(static_cast<uint8_t>(code)), e5m2_to_float(static_cast<uint8_t>(code))}) {
      if (!std::isfinite(v)) continue;
      const float next = std::nextafter(v, INFINITY);
      for (float m : {v, -v, (v + e4m3_to_float(static_cast<uint8_t>(code + 1))) / 2}) {
        uint32_t mb = std::bit_cast<uint32_t>(m);
        for (uint32_t d : {mb - 1, mb, mb + 1}) bits.push_back(d);
      }
      bits.push_back(std::bit_cast<uint32_t>(next));
    }
  }
  Tensor t = Tensor::empty(ctx, {static_cast<int64_t>(bits.size())}, DType::F32);
  std::memcpy(t.data_ptr(), bits.data(), bits.size() * 4);
  return t;
}

TEST_F(CudaOps, CastsAreByteIdenticalToCpuOnADenseSweep) {
  Tensor host = float_sweep(cpu);
  Tensor dev = ops::to(host, gpu);
  for (DType target : {DType::BF16, DType::F16, DType::E4M3, DType::E5M2, DType::F64, DType::I32, DType::U8}) {
    for (Fp8Saturation sat : {Fp8Saturation::Saturate, Fp8Saturation::NoSaturate}) {
      EXPECT_EQ(ops::to_bytes(ops::cast(dev, target, sat)), ops::to_bytes(ops::cast(host, target, sat)))
          << dtype_name(target) << (sat == Fp8Saturation::Saturate ? " saturating" : " non-saturating");
    }
  }
}

TEST_F(CudaOps, EveryFp8CodeDecodesAsOnCpu) {
  Tensor codes = ops::arange(cpu, 256, DType::U8);
  for (DType fmt : {DType::E4M3, DType::E5M2}) {
    Tensor host_codes = codes.view_as(fmt);
    Tensor dev_codes = ops::to(host_codes, gpu);
    for (DType out : {DType::F32, DType::BF16, DType::F16, DType::E4M3, DType::E5M2}) {
      EXPECT_EQ(ops::to_bytes(ops::cast(dev_codes, out)), ops::to_bytes(ops::cast(host_codes, out)))
          << dtype_name(fmt) << " -> " << dtype_name(out);
    }
  }
}

TEST_F(CudaOps, StridedCopiesAndTransfersMatch) {
  const std::vector<double> v = random_values(2 * 3 * 5 * 7, 11);
  Tensor host = ops::from_vector(cpu, {2, 3, 5, 7}, DType::F32, v);
  Tensor dev = ops::to(host, gpu);
  EXPECT_EQ(dev.device(), Device::cuda(0));
  EXPECT_EQ(ops::to_bytes(dev), ops::to_bytes(host));
  Tensor dev_perm = ops::contiguous(dev.permute({3, 1, 0, 2}).slice(0, 1, 7, 2));
  Tensor host_perm = ops::contiguous(host.permute({3, 1, 0, 2}).slice(0, 1, 7, 2));
  EXPECT_EQ(ops::to_bytes(dev_perm), ops::to_bytes(host_perm));
  // Copy from the CPU into a strided CUDA view, with a conversion on the way.
  Tensor target = ops::zeros(gpu, {7, 5}, DType::BF16);
  Tensor target_t = target.transpose(0, 1);
  Tensor src = ops::from_vector(cpu, {5, 7}, DType::F64, random_values(35, 12));
  ops::copy_(target_t, src);
  EXPECT_EQ(ops::to_double_vector(target_t), ops::to_double_vector(ops::cast(src, DType::BF16)));
  // Contiguous F32 <-> BF16 (the vectorised conversion; 8 * 1000 + 5 elements: a scalar tail), and a view
  // starting off the vector alignment (the scalar kernel): the CPU's bits.
  const Tensor f32 = ops::from_vector(cpu, {8005}, DType::F32, random_values(8005, 13, 100.0));
  for (int64_t start : {0, 1}) {
    const Tensor h = f32.slice(0, start, 8005);
    Tensor d = ops::to(h, gpu);
    Tensor d16 = ops::zeros(gpu, {8005 - start}, DType::BF16);
    ops::copy_(d16, d);
    EXPECT_EQ(ops::to_bytes(d16), ops::to_bytes(ops::cast(h, DType::BF16))) << start;
    Tensor back = ops::zeros(gpu, {8005 - start}, DType::F32);
    ops::copy_(back, d16);
    EXPECT_EQ(ops::to_bytes(back), ops::to_bytes(ops::cast(ops::cast(h, DType::BF16), DType::F32))) << start;
  }
}

// The contiguous copy of a transposed 2-D view takes the tiled kernel (cuda/transpose.h): the CPU's bytes for
// 1-, 2- and 4-byte elements, on shapes that are and are not multiples of its 64 x 64 tile, and every byte value
// (U8: the kernel moves bytes, FP8 NaN codes included). 1-byte shapes with both sides multiples of 4 take the
// word kernel (whole tiles, edge tiles, one smaller than a tile), the others the byte kernel. Views it does not
// take (a slice: other strides) still copy.
TEST_F(CudaOps, TransposedViewsCopyAsOnCpu) {
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1000, 333}, {128, 4096}, {2, 70},   {65, 64},
                                                           {1000, 332}, {4, 12},     {68, 196}, {4096, 1104}};
  for (DType t : {DType::U8, DType::E4M3, DType::BF16, DType::F32}) {
    for (const auto& [rows, cols] : shapes) {
      const size_t n = static_cast<size_t>(rows * cols);
      Tensor host = t == DType::U8
                        ? ops::from_vector(cpu, {rows, cols}, DType::U8, [&] {
                            std::vector<double> b(n);
                            for (size_t i = 0; i < n; ++i) b[i] = static_cast<double>((i * 131 + 7) % 256);
                            return b;
                          }())
                        : ops::cast(ops::from_vector(cpu, {rows, cols}, DType::F32, random_values(n, 21, 3.0)), t);
      Tensor dev = ops::to(host, gpu);
      EXPECT_EQ(ops::to_bytes(ops::contiguous(dev.transpose(0, 1))), ops::to_bytes(ops::contiguous(host.transpose(0, 1))))
          << dtype_name(t) << " [" << rows << ", " << cols << "]";
      const Tensor dev_sliced = dev.transpose(0, 1).slice(1, 1, rows);
      EXPECT_EQ(ops::to_bytes(ops::contiguous(dev_sliced)),
                ops::to_bytes(ops::contiguous(host.transpose(0, 1).slice(1, 1, rows))))
          << dtype_name(t) << " sliced [" << rows << ", " << cols << "]";
    }
  }
}

TEST_F(CudaOps, FillsMatch) {
  for (DType t : {DType::F32, DType::BF16, DType::E4M3, DType::I64, DType::U16}) {
    EXPECT_EQ(ops::to_bytes(ops::full(gpu, {3, 333}, -3.3, t)), ops::to_bytes(ops::full(cpu, {3, 333}, -3.3, t)));
    EXPECT_EQ(ops::to_bytes(ops::arange(gpu, 1000, t, -5, 0.37)), ops::to_bytes(ops::arange(cpu, 1000, t, -5, 0.37)));
  }
  Tensor dev = ops::zeros(gpu, {4, 64}, DType::F32);
  Tensor col = dev.slice(1, 3, 64, 5);
  ops::fill_(col, 2.0);
  Tensor host = ops::zeros(cpu, {4, 64}, DType::F32);
  Tensor host_col = host.slice(1, 3, 64, 5);
  ops::fill_(host_col, 2.0);
  EXPECT_EQ(ops::to_bytes(dev), ops::to_bytes(host));
  // Zero fills are memsets; -0.0 keeps its sign bit.
  for (double z : {0.0, -0.0}) {
    Tensor d = ops::full(gpu, {1000}, 5.0, DType::F32);
    ops::fill_(d, z);
    EXPECT_EQ(ops::to_bytes(d), ops::to_bytes(ops::full(cpu, {1000}, z, DType::F32))) << z;
  }
}

TEST_F(CudaOps, RandomFillsAreBitIdenticalAcrossDevices) {
  for (int64_t n : {1, 4, 1000003}) {
    for (DType t : {DType::F32, DType::BF16, DType::F64}) {
      RandomGenerator g_cpu{42, 17}, g_gpu{42, 17};
      Tensor h = Tensor::empty(cpu, {n}, t), d = Tensor::empty(gpu, {n}, t);
      ops::normal_(h, g_cpu, 0.5f, 0.02f);
      ops::normal_(d, g_gpu, 0.5f, 0.02f);
      EXPECT_EQ(ops::to_bytes(d), ops::to_bytes(h)) << "normal " << n << " " << dtype_name(t);
      ops::uniform_(h, g_cpu, -1.0f, 1.0f);
      ops::uniform_(d, g_gpu, -1.0f, 1.0f);
      EXPECT_EQ(ops::to_bytes(d), ops::to_bytes(h)) << "uniform " << n << " " << dtype_name(t);
      EXPECT_EQ(g_cpu.offset, g_gpu.offset);
    }
  }
}

TEST_F(CudaOps, ElementwiseIsByteIdentical) {
  for (DType t : {DType::F32, DType::BF16, DType::F16, DType::F64}) {
    Tensor a = ops::from_vector(cpu, {257, 129}, t, random_values(257 * 129, 21, 5.0));
    Tensor b = ops::from_vector(cpu, {257, 129}, t, random_values(257 * 129, 22, 5.0));
    Tensor da = ops::to(a, gpu), db = ops::to(b, gpu);
    EXPECT_EQ(ops::to_bytes(ops::add(da, db)), ops::to_bytes(ops::add(a, b))) << dtype_name(t);
    EXPECT_EQ(ops::to_bytes(ops::sub(da, db)), ops::to_bytes(ops::sub(a, b))) << dtype_name(t);
    EXPECT_EQ(ops::to_bytes(ops::mul(da, db)), ops::to_bytes(ops::mul(a, b))) << dtype_name(t);
    EXPECT_EQ(ops::to_bytes(ops::scale(da, -0.3)), ops::to_bytes(ops::scale(a, -0.3))) << dtype_name(t);
    // Non-contiguous operands go through contiguous() first.
    EXPECT_EQ(ops::to_bytes(ops::add(da.transpose(0, 1), db.transpose(0, 1))),
              ops::to_bytes(ops::add(a.transpose(0, 1), b.transpose(0, 1))));
    // Views that start off a 16-byte boundary take the scalar kernel; aligned ones the vectorised one.
    EXPECT_EQ(ops::to_bytes(ops::add(da.flatten().slice(0, 1, 1001), db.flatten().slice(0, 3, 1003))),
              ops::to_bytes(ops::add(a.flatten().slice(0, 1, 1001), b.flatten().slice(0, 3, 1003))));
    ops::mul_(da, db);
    ops::mul_(a, b);
    EXPECT_EQ(ops::to_bytes(da), ops::to_bytes(a));
  }
}

// BF16 add/sub/mul run in float on the GPU's vector path: the same bits as the CPU's double arithmetic,
// also for operands 2^-60..2^60 apart (sums far below half an ulp), infinities and NaN.
TEST_F(CudaOps, Bf16BinaryOpsMatchAcrossWideExponentGaps) {
  std::mt19937 gen(5);
  std::uniform_real_distribution<double> mant(1.0, 2.0), expo(-60.0, 60.0);
  const int64_t n = 8 * 4096 + 3;
  std::vector<double> va(static_cast<size_t>(n)), vb(static_cast<size_t>(n));
  for (size_t i = 0; i < va.size(); ++i) {
    va[i] = (i % 3 == 0 ? -1 : 1) * mant(gen) * std::exp2(std::floor(expo(gen)));
    vb[i] = (i % 5 == 0 ? -1 : 1) * mant(gen) * std::exp2(std::floor(expo(gen)));
  }
  va[7] = std::numeric_limits<double>::infinity();
  vb[8] = std::numeric_limits<double>::quiet_NaN();
  va[9] = -va[9 + 1];
  vb[9] = va[9 + 1];
  Tensor a = ops::from_vector(cpu, {n}, DType::BF16, va), b = ops::from_vector(cpu, {n}, DType::BF16, vb);
  Tensor da = ops::to(a, gpu), db = ops::to(b, gpu);
  EXPECT_EQ(ops::to_bytes(ops::add(da, db)), ops::to_bytes(ops::add(a, b)));
  EXPECT_EQ(ops::to_bytes(ops::sub(da, db)), ops::to_bytes(ops::sub(a, b)));
  EXPECT_EQ(ops::to_bytes(ops::mul(da, db)), ops::to_bytes(ops::mul(a, b)));
}

TEST_F(CudaOps, SumsMatchWithinSummationOrder) {
  // Both backends accumulate in double and round once to f32: the results can differ only by the
  // double-precision reordering error (~n * 2^-53 relative), far below the final f32 rounding, so a
  // relative tolerance of 1 f32 ulp (2^-23) holds.
  for (int64_t n : {1, 1000, 3000017}) {
    Tensor x = ops::from_vector(cpu, {n}, DType::F32, random_values(static_cast<size_t>(n), 31));
    const double expected = ops::sum(x).item();
    const double got = ops::to_double_vector(ops::sum(ops::to(x, gpu)))[0];
    EXPECT_NEAR(got, expected, std::abs(expected) * 0x1p-23 + 1e-30) << n;
  }
  Tensor m = ops::from_vector(cpu, {300, 1001}, DType::BF16, random_values(300 * 1001, 32));
  const std::vector<double> rows = ops::to_double_vector(ops::sum_last_dim(m));
  const std::vector<double> dev_rows = ops::to_double_vector(ops::sum_last_dim(ops::to(m, gpu)));
  for (size_t i = 0; i < rows.size(); ++i) EXPECT_NEAR(dev_rows[i], rows[i], std::abs(rows[i]) * 0x1p-23 + 1e-30);
  // The device result is deterministic run to run.
  Tensor big = ops::to(ops::from_vector(cpu, {1 << 20}, DType::F32, random_values(1 << 20, 33)), gpu);
  EXPECT_EQ(ops::to_bytes(ops::sum(big)), ops::to_bytes(ops::sum(big)));
}

TEST_F(CudaOps, SteadyStateMakesNoDeviceAllocations) {
  Tensor a = ops::to(ops::from_vector(cpu, {1024, 1024}, DType::F32, random_values(1 << 20, 41)), gpu);
  auto iteration = [&] {
    Tensor b = ops::scale(a, 2.0);
    Tensor c = ops::add(a, b);
    Tensor s = ops::sum(c);
    Tensor h = ops::cast(c, DType::BF16);
    return ops::to_double_vector(s)[0];
  };
  iteration();
  const uint64_t mallocs = gpu->allocator().memory_report().system_allocations;
  for (int i = 0; i < 5; ++i) iteration();
  EXPECT_EQ(gpu->allocator().memory_report().system_allocations, mallocs);
  Tensor w = Tensor::empty(gpu, {1 << 20}, DType::F32, MemoryCategory::Weights);
  EXPECT_GE(gpu->allocator().memory_report().current(MemoryCategory::Weights), 4u << 20);
}

}  // namespace
}  // namespace coat
