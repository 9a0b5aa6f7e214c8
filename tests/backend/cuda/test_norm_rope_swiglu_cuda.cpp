// CUDA kernels of RMSNorm, LayerNorm, RoPE and SwiGLU (forward and backward) against the CPU backend on
// random, non-zero inputs, through the device-agnostic ops. Both backends compute in float (double for
// f64) with the same unfused formulas; they differ in:
//  - row sums (norms): the CPU sums in double, the GPU in float (block tree): statistics agree to a few
//    float ulps, so outputs agree to rtol 1e-5 in f32 and to 1 bf16 ulp (rounding flips) in bf16, plus an
//    absolute 1e-5 x max|output| for outputs that are differences of nearly equal terms (backward);
//  - expf (SwiGLU): the device's is within 2 float ulps of the host's: rtol 4e-6 in f32, 1 ulp in bf16;
//  - RoPE: cos/sin are computed in double on both and rounded once to float, so f32/bf16 results are
//    normally bit-identical; allowed: a 1-ulp difference of a float cos/sin (2^-22 (|x_i| + |x_i+Dh/2|)) and,
//    in bf16, 1 bf16 ulp. In f64 the device's sincos (2 ulps) differs from the host's (the inverse
//    frequencies are the host's, so the angles are the same doubles): allowed, with the margin of the time
//    the device computed pow itself, 2^-50 (1 + largest angle) (|x_i| + |x_i+Dh/2|).
// Every GPU result must also be bit-identical across two runs (RMSNorm's dweight included).
// RoPE with scaled frequencies (llama3, linear, computed on the host): as RoPE.
// RoPE with rotary_heads < H: the rotated heads as above, the others bit-identical to the input; in place
// bit-identical to out of place. Packed SwiGLU (gu [N, 2F]): as SwiGLU against the CPU, and bit-identical to
// the GPU's SwiGLU on the two halves (the same device arithmetic).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "coat/models/rope_scaling.h"
#include "coat/ops/activation.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/elementwise.h"
#include "coat/ops/norm.h"
#include "coat/ops/rope.h"
#include "coat/ops/runtime.h"
#include "cuda_test_util.h"
#include "cuda_timing.h"
#include "expect_error.h"
#include "random_values.h"

#ifdef COAT_WITH_CUDA
#include <cuda_runtime_api.h>

#include "coat/backend/cuda/activation.h"
#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/cuda_context.h"
#include "coat/backend/cuda/launch.h"
#endif

namespace coat {
namespace {

constexpr double kBf16Ulp = 0x1p-7;  // 1 bf16 ulp relative to the value (upper bound)

class CudaNormRopeSwiglu : public test::CudaTest {};

using test::nonzero_normal;

/// A contiguous tensor whose data starts one element past a 16-byte boundary (the kernels' scalar path).
Tensor misaligned(const Tensor& t) {
  Tensor big = Tensor::empty(t.context(), {t.numel() + 1}, t.dtype());
  Tensor view = big.slice(0, 1, t.numel() + 1).reshape(t.shape());
  ops::copy_(view, t);
  return view;
}

struct Tolerance {
  double rtol = 0.0;      // times |expected|
  double atol_max = 0.0;  // times max |expected| over the tensor
};

Tolerance tolerance_for(DType t, double f32_rtol, double atol_max) {
  if (t == DType::F64) return {1e-12, 1e-12};
  if (t == DType::BF16) return {kBf16Ulp, atol_max};
  return {f32_rtol, atol_max};
}

/// Expects |got - expected| <= rtol |expected| + atol_max max|expected| element by element; reports the
/// number of violations, the worst one and the fraction of bit-identical values.
void expect_close(const Tensor& got_t, const Tensor& expected_t, Tolerance tol, const std::string& what) {
  ASSERT_EQ(got_t.shape(), expected_t.shape()) << what;
  const std::vector<double> got = ops::to_double_vector(got_t), expected = ops::to_double_vector(expected_t);
  double max_abs = 0.0;
  for (double e : expected) max_abs = std::max(max_abs, std::abs(e));
  size_t bad = 0, exact = 0, worst = 0;
  double worst_ratio = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::abs(got[i] - expected[i]);
    const double allowed = tol.rtol * std::abs(expected[i]) + tol.atol_max * max_abs;
    if (got[i] == expected[i]) ++exact;
    if (!(err <= allowed)) ++bad;
    const double ratio = allowed > 0 ? err / allowed : (err > 0 ? INFINITY : 0.0);
    if (ratio > worst_ratio || std::isnan(got[i])) {
      worst_ratio = std::isnan(got[i]) ? INFINITY : ratio;
      worst = i;
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << got.size() << " outside tolerance; worst at " << worst
                     << ": got " << got[worst] << ", expected " << expected[worst];
  std::printf("  %-48s exact %6.2f%%  worst err/allowed %.3f\n", what.c_str(),
              100.0 * static_cast<double>(exact) / static_cast<double>(std::max<size_t>(got.size(), 1)),
              worst_ratio);
}

std::string label(const char* op, const Shape& shape, DType t, const char* extra = "") {
  return std::string(op) + " " + shape_str(shape) + " " + std::string(dtype_name(t)) + extra;
}

const std::vector<Shape>& norm_shapes() {
  // Odd and even row lengths; short rows; rows longer than the register cache (re-read path); [..., D].
  static const std::vector<Shape> shapes = {{4, 7},      {33, 64},   {17, 1000},   {5, 3001},
                                            {3, 16384},  {2, 20000}, {3, 9999},    {2, 3, 96}};
  return shapes;
}

TEST_F(CudaNormRopeSwiglu, RmsNormForwardMatchesCpu) {
  uint32_t seed = 100;
  for (DType t : {DType::F32, DType::BF16}) {
    for (const Shape& shape : norm_shapes()) {
      for (bool affine : {true, false}) {
        Tensor x = test::nonzero_normal_tensor(cpu, shape, t, ++seed, 0.3, 1.5);
        Tensor w = affine ? test::nonzero_normal_tensor(cpu, {shape.back()}, t, ++seed, 1.0, 0.2) : Tensor();
        const ops::NormForward ref = ops::rmsnorm_forward(x, w, 1e-5);
        const ops::NormForward got =
            ops::rmsnorm_forward(ops::to(x, gpu), affine ? ops::to(w, gpu) : Tensor(), 1e-5);
        const char* tag = affine ? "" : " no weight";
        expect_close(got.rstd, ref.rstd, {1e-5, 0.0}, label("rmsnorm rstd", shape, t, tag));
        expect_close(got.y, ref.y, tolerance_for(t, 1e-5, 0.0), label("rmsnorm y", shape, t, tag));
      }
    }
  }
}

TEST_F(CudaNormRopeSwiglu, RmsNormBackwardMatchesCpu) {
  uint32_t seed = 200;
  for (DType t : {DType::F32, DType::BF16}) {
    for (const Shape& shape : norm_shapes()) {
      for (bool affine : {true, false}) {
        const int64_t d = shape.back();
        const int64_t rows = shape_numel(shape) / d;
        Tensor x = test::nonzero_normal_tensor(cpu, shape, t, ++seed, 0.3, 1.5);
        Tensor dy = test::nonzero_normal_tensor(cpu, shape, t, ++seed, 0.0, 0.7);
        Tensor w = affine ? test::nonzero_normal_tensor(cpu, {d}, t, ++seed, 1.0, 0.2) : Tensor();
        // Both backends get the same rstd (the CPU's), so that only the backward differs.
        const Tensor rstd = ops::rmsnorm_forward(x, w, 1e-5).rstd;
        Tensor acc_cpu, acc_gpu;
        if (affine) {
          acc_cpu = test::nonzero_normal_tensor(cpu, {d}, DType::F32, ++seed);
          acc_gpu = ops::to(acc_cpu, gpu);
        }
        const Tensor acc_before = affine ? ops::clone(acc_cpu) : Tensor();
        const Tensor ref = ops::rmsnorm_backward(dy, x, w, rstd, acc_cpu);
        const Tensor got = ops::rmsnorm_backward(ops::to(dy, gpu), ops::to(x, gpu),
                                                 affine ? ops::to(w, gpu) : Tensor(), ops::to(rstd, gpu), acc_gpu);
        const char* tag = affine ? "" : " no weight";
        expect_close(got, ref, tolerance_for(t, 1e-5, 1e-5), label("rmsnorm dx", shape, t, tag));
        if (!affine) continue;
        // dweight: float partial sums over each block's rows: allow 2e-5 of sum_n |dy x rstd| per column.
        const std::vector<double> xv = ops::to_double_vector(x), dyv = ops::to_double_vector(dy),
                                  rv = ops::to_double_vector(rstd), before = ops::to_double_vector(acc_before),
                                  want = ops::to_double_vector(acc_cpu), have = ops::to_double_vector(acc_gpu);
        size_t bad = 0;
        for (int64_t i = 0; i < d; ++i) {
          double mag = std::abs(before[i]);
          for (int64_t n = 0; n < rows; ++n) mag += std::abs(dyv[n * d + i] * xv[n * d + i] * rv[n]);
          if (!(std::abs(have[i] - want[i]) <= 2e-5 * mag + 1e-7 * std::abs(want[i]))) ++bad;
        }
        EXPECT_EQ(bad, 0u) << label("rmsnorm dweight", shape, t);
      }
    }
  }
}

TEST_F(CudaNormRopeSwiglu, LayerNormForwardAndBackwardMatchCpu) {
  uint32_t seed = 300;
  for (DType t : {DType::F32, DType::BF16}) {
    for (const Shape& shape : norm_shapes()) {
      Tensor x = test::nonzero_normal_tensor(cpu, shape, t, ++seed, 0.5, 2.0);
      Tensor dy = test::nonzero_normal_tensor(cpu, shape, t, ++seed, 0.1, 0.7);
      const ops::NormForward ref = ops::layernorm_forward(x, 1e-5);
      const ops::NormForward got = ops::layernorm_forward(ops::to(x, gpu), 1e-5);
      expect_close(got.mean, ref.mean, {1e-5, 1e-6}, label("layernorm mean", shape, t));
      expect_close(got.rstd, ref.rstd, {1e-5, 0.0}, label("layernorm rstd", shape, t));
      expect_close(got.y, ref.y, tolerance_for(t, 1e-5, 1e-6), label("layernorm y", shape, t));
      const Tensor dref = ops::layernorm_backward(dy, x, ref.mean, ref.rstd);
      const Tensor dgot = ops::layernorm_backward(ops::to(dy, gpu), ops::to(x, gpu), ops::to(ref.mean, gpu),
                                                  ops::to(ref.rstd, gpu));
      expect_close(dgot, dref, tolerance_for(t, 1e-5, 1e-5), label("layernorm dx", shape, t));
    }
  }
}

TEST_F(CudaNormRopeSwiglu, NormsOnMisalignedAndF64InputsMatchCpu) {
  // A view starting one element past a 16-byte boundary takes the scalar path.
  for (DType t : {DType::F32, DType::BF16}) {
    Tensor x = test::nonzero_normal_tensor(cpu, {9, 512}, t, 401, 0.2, 1.0);
    Tensor w = test::nonzero_normal_tensor(cpu, {512}, t, 402, 1.0, 0.2);
    Tensor dy = test::nonzero_normal_tensor(cpu, {9, 512}, t, 403);
    const ops::NormForward ref = ops::rmsnorm_forward(x, w, 1e-6);
    const Tensor xg = misaligned(ops::to(x, gpu)), dyg = misaligned(ops::to(dy, gpu));
    expect_close(ops::rmsnorm_forward(xg, ops::to(w, gpu), 1e-6).y, ref.y, tolerance_for(t, 1e-5, 0.0),
                 label("rmsnorm y misaligned", {9, 512}, t));
    Tensor acc_cpu = ops::zeros(cpu, {512}, DType::F32), acc_gpu = ops::zeros(gpu, {512}, DType::F32);
    const Tensor dref = ops::rmsnorm_backward(dy, x, w, ref.rstd, acc_cpu);
    const Tensor dgot = ops::rmsnorm_backward(dyg, xg, ops::to(w, gpu), ops::to(ref.rstd, gpu), acc_gpu);
    expect_close(dgot, dref, tolerance_for(t, 1e-5, 1e-5), label("rmsnorm dx misaligned", {9, 512}, t));
    expect_close(acc_gpu, acc_cpu, {1e-5, 1e-5}, label("rmsnorm dweight misaligned", {512}, t));
    const ops::NormForward lref = ops::layernorm_forward(x, 1e-5);
    expect_close(ops::layernorm_forward(xg, 1e-5).y, lref.y, tolerance_for(t, 1e-5, 1e-6),
                 label("layernorm y misaligned", {9, 512}, t));
  }
  // f64: statistics in f64, dweight into an f64 accumulator.
  Tensor x = test::nonzero_normal_tensor(cpu, {7, 301}, DType::F64, 410, 0.3, 1.0);
  Tensor w = test::nonzero_normal_tensor(cpu, {301}, DType::F64, 411, 1.0, 0.2);
  Tensor dy = test::nonzero_normal_tensor(cpu, {7, 301}, DType::F64, 412);
  const ops::NormForward ref = ops::rmsnorm_forward(x, w, 1e-6);
  const ops::NormForward got = ops::rmsnorm_forward(ops::to(x, gpu), ops::to(w, gpu), 1e-6);
  EXPECT_EQ(got.rstd.dtype(), DType::F64);
  expect_close(got.y, ref.y, {1e-12, 1e-12}, "rmsnorm y f64");
  Tensor acc_cpu = ops::zeros(cpu, {301}, DType::F64), acc_gpu = ops::zeros(gpu, {301}, DType::F64);
  expect_close(ops::rmsnorm_backward(ops::to(dy, gpu), ops::to(x, gpu), ops::to(w, gpu), ops::to(ref.rstd, gpu),
                                     acc_gpu),
               ops::rmsnorm_backward(dy, x, w, ref.rstd, acc_cpu), {1e-12, 1e-12}, "rmsnorm dx f64");
  expect_close(acc_gpu, acc_cpu, {1e-12, 1e-12}, "rmsnorm dweight f64");
  const ops::NormForward lref = ops::layernorm_forward(x, 1e-5);
  const ops::NormForward lgot = ops::layernorm_forward(ops::to(x, gpu), 1e-5);
  expect_close(lgot.y, lref.y, {1e-12, 1e-12}, "layernorm y f64");
  expect_close(ops::layernorm_backward(ops::to(dy, gpu), ops::to(x, gpu), ops::to(lref.mean, gpu),
                                       ops::to(lref.rstd, gpu)),
               ops::layernorm_backward(dy, x, lref.mean, lref.rstd), {1e-12, 1e-12}, "layernorm dx f64");
}

/// RoPE tolerance per element from the input pair (see the file comment).
void expect_rope_close(const Tensor& got_t, const Tensor& expected_t, const Tensor& x_t, DType t,
                       double max_angle, const std::string& what) {
  const std::vector<double> got = ops::to_double_vector(got_t), want = ops::to_double_vector(expected_t),
                            x = ops::to_double_vector(x_t);
  const int64_t dh = x_t.size(3), half = dh / 2;
  size_t bad = 0, exact = 0;
  for (size_t e = 0; e < got.size(); ++e) {
    const int64_t i = static_cast<int64_t>(e) % dh;
    const size_t lo = i < half ? e : e - half;
    const double pair = std::abs(x[lo]) + std::abs(x[lo + half]);
    const double allowed = (t == DType::F64 ? 0x1p-50 * (1.0 + max_angle) : 0x1p-22) * pair +
                           (t == DType::BF16 ? kBf16Ulp * std::abs(want[e]) : 0.0);
    if (got[e] == want[e]) ++exact;
    if (!(std::abs(got[e] - want[e]) <= allowed)) ++bad;
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << got.size() << " outside tolerance";
  std::printf("  %-48s exact %6.2f%%\n", what.c_str(),
              100.0 * static_cast<double>(exact) / static_cast<double>(std::max<size_t>(got.size(), 1)));
}

TEST_F(CudaNormRopeSwiglu, RopeMatchesCpu) {
  struct Case {
    Shape shape;
    double theta;
    int64_t offset;
  };
  const std::vector<Case> cases = {{{2, 5, 3, 128}, 10000.0, 0},  {{1, 7, 2, 6}, 10000.0, 3},
                                   {{2, 3, 4, 16}, 500000.0, 11}, {{1, 300, 2, 64}, 10000.0, 5000},
                                   {{3, 2, 5, 10}, 10000.0, 1},   {{1, 1, 1, 2}, 10.0, 7}};
  uint32_t seed = 500;
  for (DType t : {DType::F32, DType::BF16, DType::F64}) {
    for (const Case& c : cases) {
      for (bool inverse : {false, true}) {
        Tensor x = test::nonzero_normal_tensor(cpu, c.shape, t, ++seed);
        const Tensor ref = ops::rope(x, c.theta, c.offset, inverse);
        const Tensor got = ops::rope(ops::to(x, gpu), c.theta, c.offset, inverse);
        const double max_angle = static_cast<double>(c.shape[1] - 1 + c.offset);  // inv_freq <= 1
        expect_rope_close(got, ref, x, t, max_angle, label("rope", c.shape, t, inverse ? " inverse" : ""));
      }
    }
    // Scalar path: misaligned start.
    Tensor x = test::nonzero_normal_tensor(cpu, {2, 3, 4, 32}, t, ++seed);
    expect_rope_close(ops::rope(misaligned(ops::to(x, gpu)), 10000.0, 2, false), ops::rope(x, 10000.0, 2, false),
                      x, t, 4.0, label("rope misaligned", {2, 3, 4, 32}, t));
  }
}

TEST_F(CudaNormRopeSwiglu, RopeRotaryHeadsAndInPlaceMatchCpu) {
  struct Case {
    Shape shape;
    int64_t rotary;
  };
  // A packed projection (Hq 4 + 2 x Hkv 2, Dh 64 and 128: vector path), odd Dh / 2 (scalar path), none and
  // all heads rotated.
  const std::vector<Case> cases = {
      {{2, 5, 8, 64}, 6}, {{1, 7, 12, 128}, 10}, {{2, 3, 5, 10}, 3}, {{1, 4, 3, 16}, 0}, {{1, 4, 3, 16}, 3}};
  uint32_t seed = 550;
  for (DType t : {DType::F32, DType::BF16, DType::F64}) {
    for (const Case& c : cases) {
      for (bool inverse : {false, true}) {
        const std::string tag = " rotary " + std::to_string(c.rotary) + (inverse ? " inverse" : "");
        Tensor x = test::nonzero_normal_tensor(cpu, c.shape, t, ++seed);
        const Tensor ref = ops::rope(x, 1e4, 2, inverse, c.rotary);
        const Tensor xg = ops::to(x, gpu);
        const Tensor got = ops::rope(xg, 1e4, 2, inverse, c.rotary);
        const double max_angle = static_cast<double>(c.shape[1] + 1);
        expect_rope_close(got, ref, x, t, max_angle, label("rope", c.shape, t, tag.c_str()));
        const int64_t h = c.shape[2];
        EXPECT_EQ(ops::to_bytes(got.slice(2, c.rotary, h)), ops::to_bytes(x.slice(2, c.rotary, h)))
            << label("rope unrotated heads", c.shape, t, tag.c_str());
        Tensor in_place = ops::clone(xg);
        ops::rope_(in_place, 1e4, 2, inverse, c.rotary);
        EXPECT_EQ(ops::to_bytes(in_place), ops::to_bytes(got))
            << label("rope_ in place", c.shape, t, tag.c_str());
      }
    }
    // Scalar path: misaligned, in place and out of place.
    Tensor x = test::nonzero_normal_tensor(cpu, {2, 3, 6, 32}, t, ++seed);
    Tensor xm = misaligned(ops::to(x, gpu));
    const Tensor ref = ops::rope(x, 1e4, 1, false, 4);
    const Tensor got = ops::rope(xm, 1e4, 1, false, 4);
    expect_rope_close(got, ref, x, t, 4.0, label("rope rotary misaligned", {2, 3, 6, 32}, t));
    ops::rope_(xm, 1e4, 1, false, 4);
    EXPECT_EQ(ops::to_bytes(xm), ops::to_bytes(got)) << label("rope_ misaligned", {2, 3, 6, 32}, t);
  }
}

// Scaled RoPE (Llama-3.1's llama3 variant, linear): the host's inverse frequencies on both backends, at
// positions past the original context where the variants differ from the default. The angles are the same
// doubles on both; the tolerance is the one above.
TEST_F(CudaNormRopeSwiglu, ScaledRopeFrequenciesMatchCpu) {
  const models::RopeScaling llama3 = models::RopeScaling::llama3(8.0, 1.0, 4.0, 8192);
  const models::RopeScaling linear = models::RopeScaling::linear(4.0);
  struct Case {
    const char* name;
    models::RopeScaling scaling;
    double theta;
    Shape shape;  // [B, T, H, Dh]
    int64_t offset, rotary;
  };
  const std::vector<Case> cases = {{"rope llama3", llama3, 500000.0, {2, 6, 5, 128}, 9000, 5},
                                   {"rope llama3 packed", llama3, 500000.0, {1, 5, 8, 64}, 20000, 6},
                                   {"rope llama3 scalar", llama3, 500000.0, {2, 3, 4, 10}, 100000, 4},
                                   {"rope linear", linear, 10000.0, {1, 4, 6, 128}, 3000, 4}};
  uint32_t seed = 900;
  for (const Case& c : cases) {
    const std::vector<double> inv_freq = c.scaling.inverse_frequencies(c.theta, c.shape[3]);
    for (DType t : {DType::F32, DType::BF16, DType::F64}) {
      for (bool inverse : {false, true}) {
        const std::string what = label(c.name, c.shape, t, inverse ? " inverse" : "");
        const Tensor x = test::nonzero_normal_tensor(cpu, c.shape, t, ++seed);
        const Tensor xg = ops::to(x, gpu);
        const Tensor got = ops::rope(xg, inv_freq, c.offset, inverse, c.rotary);
        const double max_angle = static_cast<double>(c.shape[1] - 1 + c.offset);  // inv_freq <= 1
        expect_rope_close(got, ops::rope(x, inv_freq, c.offset, inverse, c.rotary), x, t, max_angle, what);
        const int64_t h = c.shape[2];
        EXPECT_EQ(ops::to_bytes(got.slice(2, c.rotary, h)), ops::to_bytes(x.slice(2, c.rotary, h))) << what;
        Tensor in_place = ops::clone(xg);
        ops::rope_(in_place, inv_freq, c.offset, inverse, c.rotary);
        EXPECT_EQ(ops::to_bytes(in_place), ops::to_bytes(got)) << what << " in place";
      }
    }
  }
  // The frequencies travel in the launch's parameters: Dh <= 512.
  const Tensor wide = ops::to(test::nonzero_normal_tensor(cpu, {1, 2, 1, 1024}, DType::F32, 990), gpu);
  test::expect_error_containing<NotImplemented>(
      [&] { ops::rope(wide, ops::rope_inverse_frequencies(1e4, 1024)); }, "[rope] cuda: head dimension 1024");
}

TEST_F(CudaNormRopeSwiglu, SwigluPackedMatchesCpuAndSwiglu) {
  uint32_t seed = 650;
  // F a multiple of the vector (vector path), odd F (scalar path), one column, leading dimensions.
  const std::vector<Shape> shapes = {{1, 2}, {7, 2}, {3, 2002}, {64, 8192}, {2, 3, 512}, {5, 48}};
  for (DType t : {DType::F32, DType::BF16, DType::F64}) {
    for (const Shape& shape : shapes) {
      for (bool offset : {false, true}) {
        Shape half = shape;
        half.back() /= 2;
        Tensor gu = test::nonzero_normal_tensor(cpu, shape, t, ++seed, 0.0, 3.0);
        Tensor dy = test::nonzero_normal_tensor(cpu, half, t, ++seed);
        Tensor gug = ops::to(gu, gpu), dyg = ops::to(dy, gpu);
        if (offset) {
          gug = misaligned(gug);
          dyg = misaligned(dyg);
        }
        const char* tag = offset ? " misaligned" : "";
        const Tolerance tol = tolerance_for(t, 4e-6, 1e-6);
        const Tensor y = ops::swiglu_packed(gug);
        expect_close(y, ops::swiglu_packed(gu), tol, label("swiglu_packed", shape, t, tag));
        const Tensor dgu = ops::swiglu_packed_backward(dyg, gug);
        expect_close(dgu, ops::swiglu_packed_backward(dy, gu), tol,
                     label("swiglu_packed dgu", shape, t, tag));
        // The same bits as the GPU's swiglu on the two halves.
        const int64_t f = half.back(), last = static_cast<int64_t>(shape.size()) - 1;
        const Tensor gate = ops::contiguous(gug.slice(last, 0, f)),
                     up = ops::contiguous(gug.slice(last, f, 2 * f));
        EXPECT_EQ(ops::to_bytes(y), ops::to_bytes(ops::swiglu(gate, up)))
            << label("swiglu_packed", shape, t, tag);
        const ops::SwigluGrads g = ops::swiglu_backward(dyg, gate, up);
        EXPECT_EQ(ops::to_bytes(dgu.slice(last, 0, f)), ops::to_bytes(g.dgate))
            << label("dgate", shape, t, tag);
        EXPECT_EQ(ops::to_bytes(dgu.slice(last, f, 2 * f)), ops::to_bytes(g.dup))
            << label("dup", shape, t, tag);
      }
    }
  }
}

TEST_F(CudaNormRopeSwiglu, SwigluForwardAndBackwardMatchCpu) {
  uint32_t seed = 600;
  const std::vector<Shape> shapes = {{1}, {7}, {1000}, {3, 1001}, {64, 4096}};
  for (DType t : {DType::F32, DType::BF16, DType::F64}) {
    for (const Shape& shape : shapes) {
      for (bool offset : {false, true}) {
        Tensor g = test::nonzero_normal_tensor(cpu, shape, t, ++seed, 0.0, 3.0);
        Tensor u = test::nonzero_normal_tensor(cpu, shape, t, ++seed);
        Tensor dy = test::nonzero_normal_tensor(cpu, shape, t, ++seed);
        Tensor gg = ops::to(g, gpu), ug = ops::to(u, gpu), dyg = ops::to(dy, gpu);
        if (offset) {
          gg = misaligned(gg);
          dyg = misaligned(dyg);
        }
        const char* tag = offset ? " misaligned" : "";
        const Tolerance tol = tolerance_for(t, 4e-6, 1e-6);
        expect_close(ops::swiglu(gg, ug), ops::swiglu(g, u), tol, label("swiglu", shape, t, tag));
        const ops::SwigluGrads ref = ops::swiglu_backward(dy, g, u);
        const ops::SwigluGrads got = ops::swiglu_backward(dyg, gg, ug);
        expect_close(got.dgate, ref.dgate, tol, label("swiglu dgate", shape, t, tag));
        expect_close(got.dup, ref.dup, tol, label("swiglu dup", shape, t, tag));
      }
    }
  }
}

TEST_F(CudaNormRopeSwiglu, RunsAreBitIdentical) {
  for (DType t : {DType::F32, DType::BF16}) {
    const Shape shape = {3000, 4096};
    Tensor x = ops::to(test::nonzero_normal_tensor(cpu, shape, t, 701, 0.2, 1.0), gpu);
    Tensor dy = ops::to(test::nonzero_normal_tensor(cpu, shape, t, 702), gpu);
    Tensor w = ops::to(test::nonzero_normal_tensor(cpu, {4096}, t, 703, 1.0, 0.2), gpu);
    const ops::NormForward f1 = ops::rmsnorm_forward(x, w, 1e-5), f2 = ops::rmsnorm_forward(x, w, 1e-5);
    EXPECT_EQ(ops::to_bytes(f1.y), ops::to_bytes(f2.y));
    EXPECT_EQ(ops::to_bytes(f1.rstd), ops::to_bytes(f2.rstd));
    Tensor a1 = ops::zeros(gpu, {4096}, DType::F32), a2 = ops::zeros(gpu, {4096}, DType::F32);
    const Tensor d1 = ops::rmsnorm_backward(dy, x, w, f1.rstd, a1);
    const Tensor d2 = ops::rmsnorm_backward(dy, x, w, f1.rstd, a2);
    EXPECT_EQ(ops::to_bytes(d1), ops::to_bytes(d2)) << dtype_name(t);
    EXPECT_EQ(ops::to_bytes(a1), ops::to_bytes(a2)) << "dweight " << dtype_name(t);
    const ops::NormForward l1 = ops::layernorm_forward(x, 1e-5), l2 = ops::layernorm_forward(x, 1e-5);
    EXPECT_EQ(ops::to_bytes(l1.y), ops::to_bytes(l2.y));
    EXPECT_EQ(ops::to_bytes(ops::layernorm_backward(dy, x, l1.mean, l1.rstd)),
              ops::to_bytes(ops::layernorm_backward(dy, x, l1.mean, l1.rstd)));
    Tensor r = x.reshape({10, 300, 32, 128});
    EXPECT_EQ(ops::to_bytes(ops::rope(r, 1e4, 3, false)), ops::to_bytes(ops::rope(r, 1e4, 3, false)));
    EXPECT_EQ(ops::to_bytes(ops::swiglu(x, dy)), ops::to_bytes(ops::swiglu(x, dy)));
    const ops::SwigluGrads s1 = ops::swiglu_backward(dy, x, dy), s2 = ops::swiglu_backward(dy, x, dy);
    EXPECT_EQ(ops::to_bytes(s1.dgate), ops::to_bytes(s2.dgate));
    EXPECT_EQ(ops::to_bytes(s1.dup), ops::to_bytes(s2.dup));
  }
}

TEST_F(CudaNormRopeSwiglu, UnsupportedDtypeIsNotImplemented) {
#ifdef COAT_WITH_CUDA
  Tensor h = ops::zeros(gpu, {4, 8}, DType::F16);
  Tensor out = ops::zeros(gpu, {4, 8}, DType::F16);
  test::expect_error_containing([&] { cuda::swiglu(h, h, out); }, "[swiglu] cuda: no kernel for dtype f16");
#endif
}

#ifdef COAT_WITH_CUDA
/// Median over `reps` timed runs (CUDA events on the context's stream, 3 warm-ups) of fn, in milliseconds.
template <typename Fn>
double median_ms(const ContextPtr& ctx, Fn&& fn, int reps = 20) {
  return test::median_ms(static_cast<cuda::CudaContext&>(*ctx).stream(), reps, fn, /*warmups=*/3);
}
#endif

// Not a test: bandwidth of each kernel vs a device-to-device copy. Run with --gtest_also_run_disabled_tests.
TEST_F(CudaNormRopeSwiglu, DISABLED_Bandwidth) {
#ifdef COAT_WITH_CUDA
  const int64_t n = 16384, d = 4096;
  const double bytes = static_cast<double>(n * d) * 2.0;  // one [16384, 4096] bf16 tensor
  RandomGenerator gen{1, 0};
  auto rnd = [&](const Shape& s) {
    Tensor t = Tensor::empty(gpu, s, DType::BF16);
    ops::normal_(t, gen, 0.0f, 1.0f);
    return t;
  };
  Tensor x = rnd({n, d}), dy = rnd({n, d}), w = rnd({d}), u = rnd({n, d});
  Tensor copy_dst = Tensor::empty(gpu, {n, d}, DType::BF16);
  cudaStream_t stream = cuda::stream_of(x);
  const double copy_ms = median_ms(gpu, [&] {
    COAT_CUDA_CHECK(cudaMemcpyAsync(copy_dst.data_ptr(), x.data_ptr(), x.nbytes(), cudaMemcpyDeviceToDevice, stream));
  });
  const double copy_gbs = 2.0 * bytes / copy_ms / 1e6;
  std::printf("device: %s\n", static_cast<cuda::CudaContext&>(*gpu).properties().str().c_str());
  std::printf("%-34s %9.3f ms %8.1f GB/s\n", "copy D2D [16384,4096] bf16", copy_ms, copy_gbs);
  auto report = [&](const char* name, double tensors, double ms) {
    const double gbs = tensors * bytes / ms / 1e6;
    std::printf("%-34s %9.3f ms %8.1f GB/s  %5.1f%% of copy\n", name, ms, gbs, 100.0 * gbs / copy_gbs);
  };
  const Tensor rstd = ops::rmsnorm_forward(x, w, 1e-5).rstd;
  Tensor acc = ops::zeros(gpu, {d}, DType::F32);
  report("rmsnorm fwd [16384,4096] bf16", 2, median_ms(gpu, [&] { ops::rmsnorm_forward(x, w, 1e-5); }));
  report("rmsnorm bwd [16384,4096] bf16", 3, median_ms(gpu, [&] { ops::rmsnorm_backward(dy, x, w, rstd, acc); }));
  const ops::NormForward ln = ops::layernorm_forward(x, 1e-5);
  report("layernorm fwd [16384,4096] bf16", 2, median_ms(gpu, [&] { ops::layernorm_forward(x, 1e-5); }));
  report("layernorm bwd [16384,4096] bf16", 3,
         median_ms(gpu, [&] { ops::layernorm_backward(dy, x, ln.mean, ln.rstd); }));
  report("add [16384,4096] bf16", 3, median_ms(gpu, [&] { ops::add(x, u); }));
  report("add_ in place [16384,4096] bf16", 3, median_ms(gpu, [&] { ops::add_(u, x); }));
  report("swiglu fwd [16384,4096] bf16", 3, median_ms(gpu, [&] { ops::swiglu(x, u); }));
  report("swiglu bwd [16384,4096] bf16", 5, median_ms(gpu, [&] { ops::swiglu_backward(dy, x, u); }));
  Tensor gu = rnd({n, 2 * d});  // packed [gate | up]
  report("swiglu_packed fwd [16384,2x4096] bf16", 3, median_ms(gpu, [&] { ops::swiglu_packed(gu); }));
  report("swiglu_packed bwd [16384,2x4096] bf16", 5,
         median_ms(gpu, [&] { ops::swiglu_packed_backward(dy, gu); }));
  // Long rows: [4096, 16384] (the backward re-reads half of each row and keeps half of its dweight partials
  // in the workspace).
  Tensor xl = x.reshape({n / 4, d * 4}), dyl = dy.reshape({n / 4, d * 4}), wl = rnd({d * 4});
  const Tensor rstd_l = ops::rmsnorm_forward(xl, wl, 1e-5).rstd;
  Tensor acc_l = ops::zeros(gpu, {d * 4}, DType::F32);
  report("rmsnorm fwd [4096,16384] bf16", 2, median_ms(gpu, [&] { ops::rmsnorm_forward(xl, wl, 1e-5); }));
  report("rmsnorm bwd [4096,16384] bf16", 3,
         median_ms(gpu, [&] { ops::rmsnorm_backward(dyl, xl, wl, rstd_l, acc_l); }));
  Tensor r = rnd({8, 2048, 32, 128});
  const double rope_tensors = static_cast<double>(r.numel()) * 2.0 * 2.0 / bytes;
  report("rope [8,2048,32,128] bf16", rope_tensors, median_ms(gpu, [&] { ops::rope(r, 1e4, 0, false); }));
  // A packed [8, 2048, 32 + 2 x 8, 128] projection rotated in place (q and k heads: 40 of 48).
  Tensor packed = rnd({8, 2048, 48, 128});
  const double packed_tensors = static_cast<double>(packed.numel()) * 40.0 / 48.0 * 2.0 * 2.0 / bytes;
  report("rope_ packed [8,2048,40/48,128] bf16", packed_tensors,
         median_ms(gpu, [&] { ops::rope_(packed, 1e4, 0, false, 40); }));
#endif
}

}  // namespace
}  // namespace coat
