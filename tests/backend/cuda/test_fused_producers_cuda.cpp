// CUDA kernels of the fused producers against the CPU backend (and against the GPU's own unfused ops) on
// random, non-zero inputs, through the device-agnostic ops:
//  - row maxima of RMSNorm, LayerNorm, the packed SwiGLU (forward and backward) and the (inverse) RoPE of a
//    packed q/k/v gradient (rows of H * Dh, the unrotated heads included): bit-identical to max |y| of the GPU's own output
//    rows (a max of amax keys, exact in any order; NaN and inf propagate), and asking for them leaves y
//    bit-identical to the kernel without them (the same per-element arithmetic and row reductions). Against
//    the CPU the maxima carry y's tolerance (test_norm_rope_swiglu_cuda.cpp), a max being 1-Lipschitz: norms
//    rtol 1e-5 in f32, 1 bf16 ulp in bf16 (row sums in float on the GPU, double on the CPU); SwiGLU rtol 4e-6
//    in f32 (the device's expf is within 2 float ulps of the host's), 1 bf16 ulp; RoPE rtol 1e-6 in f32 (each
//    value within 2^-22 of its pair's |a| + |b|, at most twice the row's max), 1 bf16 ulp; plus, as for y, 1e-6 of the
//    largest maximum (LayerNorm's centring);
//  - the norm backwards from COAT's compressed x (restored in the kernel): the bytes of the GPU's backward of
//    its own restored x;
//  - the norm backwards with the residual gradient added in their kernels: the bytes of the GPU's ops::add of
//    the residual and its own dx (the same roundings), dweight unchanged, the maxima those of the summed rows;
//  - quantize_per_tensor_from_row_maxima: exact bytes, equal to the GPU's quantize_per_tensor and to the CPU's
//    (codes, codes_t, scale, scale_inv);
//  - add_quantize_per_group: exact bytes, equal to the CPU reference (sum, codes, scale_inv) and to the GPU's
//    ops::add then quantize_per_group: one correctly rounded addition per element and the scalar math of
//    quantize_math.h on both backends.
// Shapes cover the kernels' paths: 16-byte vectors and the scalar path (misaligned views, odd widths), rows
// longer than the norm kernels' register cache, SwiGLU rows shorter than a warp, group teams of 1 to 32 lanes
// and groups longer than a team's register cache (re-read from the lane's own stores), many rows for the
// maxima reduction.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "coat/core/random_generator.h"
#include "coat/ops/activation.h"
#include "coat/ops/add_quantize.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/elementwise.h"
#include "coat/ops/norm.h"
#include "coat/ops/quantize.h"
#include "coat/ops/reduce.h"
#include "coat/ops/rope.h"
#include "coat/ops/runtime.h"
#include "cuda_test_util.h"
#include "cuda_timing.h"
#include "random_values.h"

#ifdef COAT_WITH_CUDA
#include "coat/backend/cuda/cuda_context.h"
#include "coat/backend/cuda/rope.h"
#endif

namespace coat {
namespace {

constexpr double kBf16Ulp = 0x1p-7;  // 1 bf16 ulp relative to the value (upper bound)

class CudaFusedProducers : public test::CudaTest {};

Tensor random_tensor(const ContextPtr& ctx, const Shape& shape, DType t, uint32_t seed, double mean = 0.0,
                     double scale = 1.0) {
  return test::nonzero_normal_tensor(ctx, shape, t, seed, mean, scale);
}

/// A contiguous copy of t whose data starts one element past a 16-byte boundary (the kernels' scalar path).
Tensor misaligned(const Tensor& t) {
  Tensor big = Tensor::empty(t.context(), {t.numel() + 1}, t.dtype());
  Tensor view = big.slice(0, 1, t.numel() + 1).reshape(t.shape());
  ops::copy_(view, t);
  return view;
}

Tensor with_value(const Tensor& t, int64_t index, double value) {
  std::vector<double> v = ops::to_double_vector(t);
  v[static_cast<size_t>(index)] = value;
  return ops::from_vector(t.context(), t.shape(), t.dtype(), v);
}

void expect_same_bytes(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.defined(), want.defined()) << what;
  if (!want.defined()) return;
  EXPECT_EQ(got.dtype(), want.dtype()) << what;
  EXPECT_EQ(got.shape(), want.shape()) << what;
  const std::vector<uint8_t> g = ops::to_bytes(got), w = ops::to_bytes(want);
  size_t differ = 0, first = 0;
  for (size_t i = 0; i < std::min(g.size(), w.size()); ++i) {
    if (g[i] != w[i] && differ++ == 0) first = i;
  }
  EXPECT_EQ(differ, 0u) << what << ": " << differ << " bytes differ, first at " << first;
}

std::vector<uint32_t> float_bits(const Tensor& t) {
  const std::vector<uint8_t> bytes = ops::to_bytes(t);
  std::vector<uint32_t> bits(bytes.size() / 4);
  std::memcpy(bits.data(), bytes.data(), bytes.size());
  return bits;
}

/// max |y| of each row of y (any device), computed on the CPU from y's values: the reference of row maxima.
std::vector<uint32_t> row_amax_bits(const Tensor& y, const ContextPtr& cpu) {
  const int64_t d = y.size(-1), rows = y.numel() / d;
  const Tensor y2 = ops::to(ops::contiguous(y), cpu).reshape({rows, d});
  std::vector<uint32_t> bits;
  for (int64_t r = 0; r < rows; ++r) bits.push_back(float_bits(ops::amax(y2.select(0, r)))[0]);
  return bits;
}

/// |got - want| <= rtol |want| + 1e-6 max |want| element by element (non-finite maxima must be equal).
void expect_maxima_close(const Tensor& got, const Tensor& want, double rtol, const std::string& what) {
  const std::vector<double> g = ops::to_double_vector(got), w = ops::to_double_vector(want);
  ASSERT_EQ(g.size(), w.size()) << what;
  double largest = 0.0;
  for (double v : w)
    if (std::isfinite(v)) largest = std::max(largest, std::abs(v));
  size_t bad = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    const bool ok = std::isfinite(w[i]) ? std::abs(g[i] - w[i]) <= rtol * std::abs(w[i]) + 1e-6 * largest
                                        : (std::isnan(w[i]) ? std::isnan(g[i]) : g[i] == w[i]);
    if (!ok) ++bad;
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << g.size() << " maxima outside rtol " << rtol;
}

std::string label(const char* op, const Shape& shape, DType t, const std::string& extra = "") {
  return std::string(op) + " " + shape_str(shape) + " " + std::string(dtype_name(t)) + extra;
}

const std::vector<Shape>& norm_shapes() {
  // Short rows; odd rows (scalar path); rows longer than the register cache (re-read path); [..., D].
  static const std::vector<Shape> shapes = {{4, 7},     {33, 64},   {17, 1000}, {5, 3001},
                                            {3, 16384}, {2, 20000}, {2, 3, 96}, {300, 256}};
  return shapes;
}

TEST_F(CudaFusedProducers, NormRowMaximaAreTheirOutputsRowMax) {
  uint32_t seed = 100;
  for (DType t : {DType::F32, DType::BF16}) {
    const double rtol = t == DType::BF16 ? kBf16Ulp : 1e-5;
    for (const Shape& shape : norm_shapes()) {
      for (bool aligned : {true, false}) {
        const Tensor x = random_tensor(cpu, shape, t, ++seed, 0.3, 1.5);
        const Tensor w = random_tensor(cpu, {shape.back()}, t, ++seed, 1.0, 0.2);
        const Tensor xg = aligned ? ops::to(x, gpu) : misaligned(ops::to(x, gpu));
        const Tensor wg = ops::to(w, gpu);
        const std::string tag = aligned ? "" : " misaligned";
        for (int kind = 0; kind < 3; ++kind) {  // rmsnorm with weight, without, layernorm
          const char* name = kind == 0 ? "rmsnorm" : kind == 1 ? "rmsnorm no weight" : "layernorm";
          const auto forward = [&](const Tensor& in, const Tensor& weight, bool row_max) {
            return kind == 2 ? ops::layernorm_forward(in, 1e-5, row_max)
                             : ops::rmsnorm_forward(in, kind == 0 ? weight : Tensor(), 1e-5, row_max);
          };
          const std::string what = label(name, shape, t, tag);
          const ops::NormForward fused = forward(xg, wg, true);
          const ops::NormForward plain = forward(xg, wg, false);
          const ops::NormForward ref = forward(x, w, true);
          expect_same_bytes(fused.y, plain.y, what + " y with maxima vs without");
          expect_same_bytes(fused.rstd, plain.rstd, what + " rstd with maxima vs without");
          EXPECT_EQ(float_bits(fused.row_max), row_amax_bits(fused.y, cpu)) << what << ": maxima of the GPU's y";
          expect_maxima_close(fused.row_max, ref.row_max, rtol, what + " maxima vs cpu");
        }
      }
    }
  }
}

TEST_F(CudaFusedProducers, SwigluRowMaximaAreTheirOutputsRowMax) {
  uint32_t seed = 200;
  for (DType t : {DType::F32, DType::BF16}) {
    const double rtol = t == DType::BF16 ? kBf16Ulp : 4e-6;
    for (const Shape& shape : {Shape{16, 2 * 4096}, Shape{5, 2 * 1001}, Shape{3, 2 * 7}, Shape{2, 3, 2 * 96},
                               Shape{700, 2 * 64}}) {
      for (bool aligned : {true, false}) {
        const Tensor gu = random_tensor(cpu, shape, t, ++seed, 0.0, 2.0);
        const Tensor gug = aligned ? ops::to(gu, gpu) : misaligned(ops::to(gu, gpu));
        const std::string what = label("swiglu_packed", shape, t, aligned ? "" : " misaligned");
        Tensor row_max, ref_max;
        const Tensor fused = ops::swiglu_packed(gug, &row_max);
        expect_same_bytes(fused, ops::swiglu_packed(gug), what + " y with maxima vs without");
        EXPECT_EQ(float_bits(row_max), row_amax_bits(fused, cpu)) << what << ": maxima of the GPU's y";
        ops::swiglu_packed(gu, &ref_max);
        expect_maxima_close(row_max, ref_max, rtol, what + " maxima vs cpu");
      }
    }
  }
}

// The SwiGLU that also writes gu's 1x16 E4M3 copy: y and its row maxima the bytes of swiglu_packed with maxima
// on the GPU, the copy the bytes of quantize_per_group(gu, 16, E4M3) on the GPU and on the CPU. F = 16 (one
// group per half-row: two bf16 lanes, four f32 ones), F = 48, 11008 and 4096 (several vectors per thread,
// rows longer than a block's pass), [..., 2F], a misaligned gu (the separate passes), non-finite groups and an
// all-zero group.
TEST_F(CudaFusedProducers, SwigluCompressedCopyIsQuantizePerGroupOfGu) {
  uint32_t seed = 700;
  for (DType t : {DType::F32, DType::BF16}) {
    for (const Shape& shape : {Shape{16, 2 * 4096}, Shape{5, 2 * 16}, Shape{3, 2 * 48}, Shape{2, 3, 2 * 96},
                               Shape{9, 2 * 11008}, Shape{700, 2 * 64}}) {
      for (bool aligned : {true, false}) {
        Tensor gu = random_tensor(cpu, shape, t, ++seed, 0.0, 2.0);
        if (shape[0] == 16) {  // a NaN gate, an inf up, an all-zero group of the up half
          const int64_t f = shape.back() / 2;
          gu = with_value(with_value(gu, 3, std::nan("")), 2 * f + f + 5, INFINITY);
          std::vector<double> v = ops::to_double_vector(gu);
          for (int64_t i = 0; i < 16; ++i) v[static_cast<size_t>(4 * f + f + 32 + i)] = 0.0;
          gu = ops::from_vector(cpu, shape, t, v);
        }
        const Tensor gug = aligned ? ops::to(gu, gpu) : misaligned(ops::to(gu, gpu));
        const std::string what = label("swiglu_packed compressed", shape, t, aligned ? "" : " misaligned");
        Tensor row_max, plain_max;
        ops::Fp8PerGroup copy;
        const Tensor y = ops::swiglu_packed(gug, &row_max, &copy);
        expect_same_bytes(y, ops::swiglu_packed(gug, &plain_max), what + " y vs without the copy");
        expect_same_bytes(row_max, plain_max, what + " maxima vs without the copy");
        EXPECT_EQ(copy.group_size, 16) << what;
        const ops::Fp8PerGroup gpu_ref = ops::quantize_per_group(gug, 16, DType::E4M3);
        expect_same_bytes(copy.codes, gpu_ref.codes, what + " codes vs gpu quantize_per_group");
        expect_same_bytes(copy.scale_inv, gpu_ref.scale_inv, what + " scale_inv vs gpu quantize_per_group");
        const ops::Fp8PerGroup cpu_ref = ops::quantize_per_group(gu, 16, DType::E4M3);
        expect_same_bytes(copy.codes, cpu_ref.codes, what + " codes vs cpu");
        expect_same_bytes(copy.scale_inv, cpu_ref.scale_inv, what + " scale_inv vs cpu");
        // Without row maxima asked for, the same copy.
        ops::Fp8PerGroup copy2;
        ops::swiglu_packed(gug, nullptr, &copy2);
        expect_same_bytes(copy2.codes, cpu_ref.codes, what + " codes without maxima");
      }
    }
  }
}

/// The SwiGLU backward's cases: f32 and bf16, rows of `shapes` (gu [..., 2F]), contiguous on the GPU or one
/// element off a 16-byte boundary (the element-wise path); check(t, rtol, gu, dy, aligned) with random CPU
/// gu and dy, rtol the tolerance of a dgu value against the CPU's.
template <typename Check>
void for_swiglu_backward_cases(uint32_t seed, const std::vector<Shape>& shapes, const ContextPtr& cpu,
                               Check check) {
  for (DType t : {DType::F32, DType::BF16}) {
    const double rtol = t == DType::BF16 ? 2 * kBf16Ulp : 2e-5;
    for (const Shape& shape : shapes) {
      for (bool aligned : {true, false}) {
        Shape dy_shape = shape;
        dy_shape.back() /= 2;
        const Tensor gu = random_tensor(cpu, shape, t, ++seed, 0.0, 2.0);
        const Tensor dy = random_tensor(cpu, dy_shape, t, ++seed, 0.0, 1.0);
        check(t, rtol, gu, dy, aligned);
      }
    }
  }
}

// The SwiGLU backward's maxima of dgu (both halves of each row): dgu bit-identical to the backward without
// them, the maxima those of the GPU's own dgu, and close to the CPU's (dgu's tolerance).
TEST_F(CudaFusedProducers, SwigluBackwardRowMaximaAreTheirGradientsRowMax) {
  const std::vector<Shape> shapes = {{16, 2 * 4096}, {5, 2 * 1001}, {3, 2 * 7}, {2, 3, 2 * 96}, {700, 2 * 64}};
  for_swiglu_backward_cases(250, shapes, cpu, [&](DType t, double rtol, const Tensor& gu, const Tensor& dy,
                                                  bool aligned) {
    const Tensor gug = aligned ? ops::to(gu, gpu) : misaligned(ops::to(gu, gpu));
    const Tensor dyg = aligned ? ops::to(dy, gpu) : misaligned(ops::to(dy, gpu));
    const std::string what = label("swiglu_packed_backward", gu.shape(), t, aligned ? "" : " misaligned");
    Tensor row_max, ref_max;
    const Tensor fused = ops::swiglu_packed_backward(dyg, gug, &row_max);
    expect_same_bytes(fused, ops::swiglu_packed_backward(dyg, gug), what + " dgu with maxima vs without");
    EXPECT_EQ(float_bits(row_max), row_amax_bits(fused, cpu)) << what << ": maxima of the GPU's dgu";
    ops::swiglu_packed_backward(dy, gu, &ref_max);
    expect_maxima_close(row_max, ref_max, rtol, what + " maxima vs cpu");
  });
}

// gu from COAT's compressed copy, restored inside the backward kernel: the bytes of the GPU's separate
// dequantisation followed by its backward (dgu and maxima), and close to the CPU's. Rows of 2F = 16k + 8 too
// (F not a multiple of 16), and a misaligned dy (the element-wise path).
TEST_F(CudaFusedProducers, SwigluBackwardFromCodesMatchesDequantiseThenBackward) {
  const std::vector<Shape> shapes = {{16, 2 * 4096}, {5, 2 * 1000}, {3, 2 * 8}, {2, 3, 2 * 96}, {700, 2 * 64}};
  for_swiglu_backward_cases(270, shapes, cpu, [&](DType t, double rtol, const Tensor& gu, const Tensor& dy,
                                                  bool aligned) {
    const ops::Fp8PerGroup q = ops::quantize_per_group(ops::to(gu, gpu), 16, DType::E4M3);
    const Tensor dyg = aligned ? ops::to(dy, gpu) : misaligned(ops::to(dy, gpu));
    const std::string what = label("swiglu_packed_backward_compressed", gu.shape(), t, aligned ? "" : " misaligned");
    Tensor row_max, want_max, cpu_max;
    const Tensor fused = ops::swiglu_packed_backward_compressed(dyg, q.codes, q.scale_inv, &row_max);
    const Tensor want = ops::swiglu_packed_backward(dyg, ops::dequantize(q, t), &want_max);
    expect_same_bytes(fused, want, what + " dgu from codes vs dequantise + backward");
    expect_same_bytes(row_max, want_max, what + " maxima from codes vs dequantise + backward");
    expect_same_bytes(ops::swiglu_packed_backward_compressed(dyg, q.codes, q.scale_inv), want,
                      what + " dgu without maxima");
    ops::swiglu_packed_backward_compressed(dy, ops::to(q.codes, cpu), ops::to(q.scale_inv, cpu), &cpu_max);
    expect_maxima_close(row_max, cpu_max, rtol, what + " maxima vs cpu");
  });
}

TEST_F(CudaFusedProducers, RowMaximaPropagateNanAndInf) {
  // RMSNorm: NaN in row 1 (the whole row NaN), an inf weight (every other row's max inf).
  const Tensor x = with_value(random_tensor(cpu, {3, 512}, DType::BF16, 301), 512 + 9, std::nan(""));
  const Tensor w = with_value(random_tensor(cpu, {512}, DType::BF16, 302, 1.0, 0.2), 100, INFINITY);
  const ops::NormForward f = ops::rmsnorm_forward(ops::to(x, gpu), ops::to(w, gpu), 1e-5, true);
  EXPECT_EQ(float_bits(f.row_max), (std::vector<uint32_t>{0x7F800000u, 0x7FFFFFFFu, 0x7F800000u}));
  const ops::NormForward l = ops::layernorm_forward(ops::to(x, gpu), 1e-5, true);
  EXPECT_EQ(float_bits(l.row_max)[1], 0x7FFFFFFFu);
  // SwiGLU: up = inf in row 0 (gate positive), gate = NaN in row 2.
  Tensor gu = random_tensor(cpu, {3, 2 * 256}, DType::BF16, 303, 1.0, 0.1);
  gu = with_value(with_value(gu, 256 + 3, INFINITY), 2 * 512 + 7, std::nan(""));
  Tensor row_max, ref_max;
  ops::swiglu_packed(ops::to(gu, gpu), &row_max);
  ops::swiglu_packed(gu, &ref_max);
  const std::vector<uint32_t> bits = float_bits(row_max), ref = float_bits(ref_max);
  EXPECT_EQ(bits[0], 0x7F800000u);
  EXPECT_EQ(bits[2], 0x7FFFFFFFu);
  EXPECT_EQ(bits[0], ref[0]);
  EXPECT_EQ(bits[2], ref[2]);
  // The SwiGLU backward: an inf dy in row 1, a NaN gate in row 2 (as above).
  const Tensor dy = with_value(random_tensor(cpu, {3, 256}, DType::BF16, 304, 1.0, 0.1), 256 + 5, INFINITY);
  Tensor d_max, d_ref;
  ops::swiglu_packed_backward(ops::to(dy, gpu), ops::to(gu, gpu), &d_max);
  ops::swiglu_packed_backward(dy, gu, &d_ref);
  EXPECT_EQ(float_bits(d_max), float_bits(d_ref));
  EXPECT_EQ(float_bits(d_max)[2], 0x7FFFFFFFu);
}

// The RoPE row kernel (the backward of packed q/k/v with maxima): rotated values bit-identical to the rotation
// without maxima, the maxima those of the GPU's own rows (the unrotated v heads included), close to the CPU's.
// Rows longer and shorter than a block, no/some/all heads rotated, f32 and bf16, the scalar path (misaligned;
// Dh/2 not a multiple of the vector), and out of place through the backend (the unrotated heads copied).
TEST_F(CudaFusedProducers, RopeRowMaximaAreTheirRowsMax) {
  struct Case {
    Shape shape;
    int64_t rotary;
  };
  const std::vector<Case> cases = {{{2, 64, 96, 128}, 64}, {{1, 33, 12, 64}, 8}, {{3, 5, 6, 16}, 6},
                                   {{2, 7, 5, 12}, 3},     {{1, 9, 4, 32}, 0},   {{1, 3, 3, 128}, 2}};
  uint32_t seed = 500;
  for (DType t : {DType::F32, DType::BF16}) {
    const double rtol = t == DType::F32 ? 1e-6 : kBf16Ulp;
    for (const Case& c : cases) {
      const std::vector<double> inv_freq = ops::rope_inverse_frequencies(1e4, c.shape[3]);
      const Tensor x = random_tensor(cpu, c.shape, t, ++seed, 0.0, 2.0);
      const int64_t rows = c.shape[0] * c.shape[1], width = c.shape[2] * c.shape[3];
      for (bool aligned : {true, false}) {
        const std::string what = label("rope_ row max", c.shape, t, " rotary " + std::to_string(c.rotary) +
                                                                        (aligned ? "" : " misaligned"));
        Tensor fused = aligned ? ops::to(x, gpu) : misaligned(ops::to(x, gpu));
        Tensor plain = ops::to(x, gpu);
        Tensor row_max, cpu_max;
        ops::rope_(fused, inv_freq, 3, /*inverse=*/true, c.rotary, &row_max);
        ops::rope_(plain, inv_freq, 3, /*inverse=*/true, c.rotary);
        expect_same_bytes(fused, plain, what + " values with maxima vs without");
        EXPECT_EQ(row_max.shape(), Shape({rows})) << what;
        EXPECT_EQ(float_bits(row_max), row_amax_bits(plain.reshape({rows, width}), cpu)) << what;
        Tensor on_cpu = ops::clone(x);
        ops::rope_(on_cpu, inv_freq, 3, true, c.rotary, &cpu_max);
        expect_maxima_close(row_max, cpu_max, rtol, what + " maxima vs cpu");
      }
#ifdef COAT_WITH_CUDA
      // Out of place: the row kernel copies the unrotated heads itself.
      const Tensor xg = ops::to(x, gpu);
      Tensor y = ops::full(gpu, c.shape, 7.0, t), y_max = ops::zeros(gpu, {rows}, DType::F32);
      cuda::rope(xg, inv_freq, 3, true, c.rotary, y, &y_max);
      Tensor in_place = ops::clone(xg), in_place_max;
      ops::rope_(in_place, inv_freq, 3, true, c.rotary, &in_place_max);
      const std::string what = label("cuda::rope out of place row max", c.shape, t);
      expect_same_bytes(y, in_place, what + " values");
      expect_same_bytes(y_max, in_place_max, what + " maxima");
#endif
    }
  }
  // NaN in row 1's unrotated head, inf in row 2's rotated head (bf16).
  Tensor x = random_tensor(cpu, {1, 3, 4, 16}, DType::BF16, 550);
  x = with_value(with_value(x, 64 + 3 * 16 + 5, std::nan("")), 2 * 64 + 2, INFINITY);
  Tensor xg = ops::to(x, gpu), row_max;
  ops::rope_(xg, ops::rope_inverse_frequencies(1e4, 16), 0, true, 2, &row_max);
  const std::vector<uint32_t> bits = float_bits(row_max);
  EXPECT_EQ(bits[1], 0x7FFFFFFFu);
  EXPECT_EQ(bits[2], 0x7F800000u);
}

// The norm backwards with the residual stream's gradient: the vector and scalar paths (misaligned residual),
// rows longer than the register cache (re-read), f64 without maxima.
TEST_F(CudaFusedProducers, NormBackwardWithResidualIsAddOfItsDx) {
  uint32_t seed = 600;
  for (DType t : {DType::F32, DType::BF16, DType::F64}) {
    for (const Shape& shape : {Shape{33, 64}, Shape{5, 3001}, Shape{2, 20000}, Shape{300, 256}, Shape{2, 3, 96}}) {
      const Tensor x = ops::to(random_tensor(cpu, shape, t, ++seed, 0.2, 1.5), gpu);
      const Tensor dy_in = ops::to(random_tensor(cpu, shape, t, ++seed, 0.0, 0.1), gpu);
      const Tensor res = ops::to(random_tensor(cpu, shape, t, ++seed, 0.0, 0.05), gpu);
      const Tensor w = ops::to(random_tensor(cpu, {shape.back()}, t, ++seed, 1.0, 0.3), gpu);
      const bool maxima = t != DType::F64;
      const DType acc = t == DType::F64 ? DType::F64 : DType::F32;
      for (bool aligned : {true, false}) {
        // Misaligned, dy too, so that both sides take the scalar kernels (whose row sums run in another order
        // than the vector kernels': an f32 dx may differ by a rounding between the two paths).
        const Tensor r = aligned ? res : misaligned(res);
        const Tensor dy = aligned ? dy_in : misaligned(dy_in);
        const std::string what = label("norm backward + residual", shape, t, aligned ? "" : " misaligned");
        const ops::NormForward f = ops::rmsnorm_forward(x, w, 1e-5);
        Tensor dw_plain = ops::zeros(gpu, {shape.back()}, acc), dw_fused = ops::zeros(gpu, {shape.back()}, acc);
        Tensor row_max, layer_max;
        const Tensor plain = ops::add(r, ops::rmsnorm_backward(dy, x, w, f.rstd, dw_plain));
        const Tensor fused = ops::rmsnorm_backward(dy, x, w, f.rstd, dw_fused, r, maxima ? &row_max : nullptr);
        expect_same_bytes(fused, plain, what + " rmsnorm dx");
        expect_same_bytes(dw_fused, dw_plain, what + " rmsnorm dweight");
        if (maxima) {
          EXPECT_EQ(float_bits(row_max), row_amax_bits(plain, cpu)) << what << " rmsnorm maxima";
        }
        const ops::NormForward l = ops::layernorm_forward(x, 1e-5);
        const Tensor lplain = ops::add(r, ops::layernorm_backward(dy, x, l.mean, l.rstd));
        const Tensor lfused = ops::layernorm_backward(dy, x, l.mean, l.rstd, r, maxima ? &layer_max : nullptr);
        expect_same_bytes(lfused, lplain, what + " layernorm dx");
        if (maxima) {
          EXPECT_EQ(float_bits(layer_max), row_amax_bits(lplain, cpu)) << what << " layernorm maxima";
        }
      }
    }
  }
}

// The norm backwards from COAT's compressed x: the bytes of the GPU's dequantisation followed by its backward,
// with the residual and the maxima; rows longer than the register cache, misaligned codes (the scalar path).
TEST_F(CudaFusedProducers, NormBackwardFromCodesIsTheBackwardOfTheRestoredInput) {
  uint32_t seed = 650;
  for (DType t : {DType::F32, DType::BF16}) {
    for (const Shape& shape : {Shape{33, 64}, Shape{5, 3008}, Shape{2, 20000}, Shape{300, 256}}) {
      const Tensor x = ops::to(random_tensor(cpu, shape, t, ++seed, 0.2, 1.5), gpu);
      const Tensor dy_in = ops::to(random_tensor(cpu, shape, t, ++seed, 0.0, 0.1), gpu);
      const Tensor res = ops::to(random_tensor(cpu, shape, t, ++seed, 0.0, 0.05), gpu);
      const Tensor w = ops::to(random_tensor(cpu, {shape.back()}, t, ++seed, 1.0, 0.3), gpu);
      const ops::Fp8PerGroup q = ops::quantize_per_group(x, 16, DType::E4M3);
      const Tensor restored = ops::dequantize(q, t);
      for (bool aligned : {true, false}) {
        // Misaligned codes, and dy too, so that both sides take the scalar kernels (see above).
        const Tensor codes = aligned ? q.codes : misaligned(q.codes);
        const Tensor dy = aligned ? dy_in : misaligned(dy_in);
        const std::string what = label("norm backward from codes", shape, t, aligned ? "" : " misaligned");
        const ops::NormForward f = ops::rmsnorm_forward(restored, w, 1e-5);
        Tensor dw_want = ops::zeros(gpu, {shape.back()}, DType::F32), dw_got = ops::zeros(gpu, {shape.back()}, DType::F32);
        Tensor want_max, got_max;
        const Tensor want = ops::rmsnorm_backward(dy, restored, w, f.rstd, dw_want, res, &want_max);
        const Tensor got = ops::rmsnorm_backward_compressed(dy, codes, q.scale_inv, w, f.rstd, dw_got, res, &got_max);
        expect_same_bytes(got, want, what + " rmsnorm dx");
        expect_same_bytes(dw_got, dw_want, what + " rmsnorm dweight");
        expect_same_bytes(got_max, want_max, what + " rmsnorm maxima");
        const ops::NormForward l = ops::layernorm_forward(restored, 1e-5);
        expect_same_bytes(ops::layernorm_backward_compressed(dy, codes, q.scale_inv, l.mean, l.rstd, res),
                          ops::layernorm_backward(dy, restored, l.mean, l.rstd, res), what + " layernorm dx");
      }
    }
  }
}

void expect_same_quantization(const ops::Fp8PerTensor& got, const ops::Fp8PerTensor& want, const std::string& what) {
  expect_same_bytes(got.codes, want.codes, what + " codes");
  expect_same_bytes(got.codes_t, want.codes_t, what + " codes_t");
  expect_same_bytes(got.scale, want.scale, what + " scale");
  expect_same_bytes(got.scale_inv, want.scale_inv, what + " scale_inv");
}

TEST_F(CudaFusedProducers, QuantizeFromRowMaximaGivesTheBytesOfQuantize) {
  uint32_t seed = 400;
  for (DType t : {DType::F32, DType::BF16, DType::F16}) {
    // Many rows (the one-block reduction loops over them), tile remainders, [..., K].
    for (const Shape& shape : {Shape{5000, 64}, Shape{100, 300}, Shape{64, 64}, Shape{2, 3, 80}}) {
      for (bool nan_row : {false, true}) {
        Tensor x = random_tensor(cpu, shape, t, ++seed, 0.0, 3.0);
        if (nan_row) x = with_value(x, shape_numel(shape) / 2, std::nan(""));
        const Tensor xg = ops::to(x, gpu);
        const Tensor maxima = ops::group_amax(xg, shape.back());
        for (DType fmt : {DType::E4M3, DType::E5M2}) {
          for (bool transpose : {false, true}) {
            if (transpose && shape.size() != 2) continue;
            std::string mode = " ";
            mode += dtype_name(fmt);
            if (transpose) mode += " T";
            if (nan_row) mode += " NaN";
            const std::string what = label("quantize from maxima", shape, t, mode);
            const ops::Fp8PerTensor fused = ops::quantize_per_tensor_from_row_maxima(xg, maxima, fmt, transpose);
            expect_same_quantization(fused, ops::quantize_per_tensor(xg, fmt, transpose), what + " vs gpu");
            expect_same_quantization(fused, ops::quantize_per_tensor(x, fmt, transpose), what + " vs cpu");
          }
        }
      }
    }
  }
  // With the maxima a GPU norm wrote.
  const Tensor x = ops::to(random_tensor(cpu, {512, 1024}, DType::BF16, ++seed, 0.2, 2.0), gpu);
  const ops::NormForward n = ops::rmsnorm_forward(x, Tensor(), 1e-5, true);
  expect_same_quantization(ops::quantize_per_tensor_from_row_maxima(n.y, n.row_max, DType::E4M3, true),
                           ops::quantize_per_tensor(n.y, DType::E4M3, true), "rmsnorm output");
}

TEST_F(CudaFusedProducers, AddQuantizeMatchesCpuAndTheUnfusedOps) {
  uint32_t seed = 500;
  struct Case {
    Shape shape;
    int64_t group;
  };
  // Groups of 16 (one lane per group for bf16, two for f32), 128 (teams), 2048 (a full warp per group, each
  // lane past its register cache); odd widths (scalar path) and [..., K].
  const std::vector<Case> cases = {{{4, 16}, 16},     {{64, 4096}, 16},  {{64, 4096}, 128}, {{7, 2048}, 2048},
                                   {{3, 5, 64}, 16},  {{9, 48}, 48},     {{1000, 256}, 16}, {{5, 4096}, 4096}};
  for (DType t : {DType::F32, DType::BF16, DType::F16}) {
    for (const Case& c : cases) {
      for (bool aligned : {true, false}) {
        const Tensor a = random_tensor(cpu, c.shape, t, ++seed, 0.0, 4.0);
        const Tensor b = random_tensor(cpu, c.shape, t, ++seed, 0.0, 0.05);
        const Tensor ag = aligned ? ops::to(a, gpu) : misaligned(ops::to(a, gpu));
        const Tensor bg = ops::to(b, gpu);
        for (DType fmt : {DType::E4M3, DType::E5M2}) {
          const std::string what = label("add_quantize", c.shape, t,
                                         " group " + std::to_string(c.group) + " " + std::string(dtype_name(fmt)) +
                                             (aligned ? "" : " misaligned"));
          const ops::SumAndGroups got = ops::add_quantize_per_group(ag, bg, c.group, fmt);
          const ops::SumAndGroups ref = ops::add_quantize_per_group(a, b, c.group, fmt);
          expect_same_bytes(got.sum, ref.sum, what + " sum vs cpu");
          expect_same_bytes(got.groups.codes, ref.groups.codes, what + " codes vs cpu");
          expect_same_bytes(got.groups.scale_inv, ref.groups.scale_inv, what + " scale_inv vs cpu");
          const Tensor sum = ops::add(ag, bg);
          const ops::Fp8PerGroup unfused = ops::quantize_per_group(sum, c.group, fmt);
          expect_same_bytes(got.sum, sum, what + " sum vs gpu add");
          expect_same_bytes(got.groups.codes, unfused.codes, what + " codes vs gpu quantize_per_group");
          expect_same_bytes(got.groups.scale_inv, unfused.scale_inv, what + " scale_inv vs gpu quantize_per_group");
        }
      }
    }
  }
}

TEST_F(CudaFusedProducers, AddQuantizeKeepsNonFiniteAndZeroGroups) {
  // Group 0: a NaN; group 1: an inf; group 2: a sum that overflows bf16; group 3: all zeros (a = -b).
  Tensor a = random_tensor(cpu, {2, 4 * 16}, DType::BF16, 601);
  a = with_value(with_value(with_value(a, 3, std::nan("")), 16 + 4, INFINITY), 32 + 1, 3.3e38);
  std::vector<double> bv = ops::to_double_vector(random_tensor(cpu, {2, 4 * 16}, DType::BF16, 602));
  const std::vector<double> av = ops::to_double_vector(a);
  bv[32 + 1] = 3.3e38;
  for (size_t i = 48; i < 64; ++i) bv[i] = -av[i];
  const Tensor b = ops::from_vector(cpu, a.shape(), DType::BF16, bv);
  const ops::SumAndGroups got = ops::add_quantize_per_group(ops::to(a, gpu), ops::to(b, gpu), 16, DType::E4M3);
  const ops::SumAndGroups ref = ops::add_quantize_per_group(a, b, 16, DType::E4M3);
  expect_same_bytes(got.sum, ref.sum, "sum");
  expect_same_bytes(got.groups.codes, ref.groups.codes, "codes");
  expect_same_bytes(got.groups.scale_inv, ref.groups.scale_inv, "scale_inv");
  const std::vector<uint32_t> si = float_bits(got.groups.scale_inv);
  EXPECT_EQ(si[0], 0x7FFFFFFFu);
  EXPECT_EQ(si[1], 0x7FFFFFFFu);
  EXPECT_EQ(si[2], 0x7FFFFFFFu);
  EXPECT_EQ(si[3], 0x3F800000u);  // all zeros: scale 1
}

#ifdef COAT_WITH_CUDA
template <typename Fn>
double median_ms(const ContextPtr& ctx, Fn&& fn, int reps = 20) {
  return test::median_ms(static_cast<cuda::CudaContext&>(*ctx).stream(), reps, fn, /*warmups=*/3);
}
#endif

// Not a test: the fused producers against the ops they replace, on a Llama-2-7B block's shapes (B*T = 8192,
// hidden 4096, F = 11008). Run with --gtest_also_run_disabled_tests.
TEST_F(CudaFusedProducers, DISABLED_Timings) {
#ifdef COAT_WITH_CUDA
  const int64_t n = 8192, d = 4096, f = 11008;
  RandomGenerator gen{1, 0};
  const auto rnd = [&](const Shape& s) {
    Tensor t = Tensor::empty(gpu, s, DType::BF16);
    ops::normal_(t, gen, 0.0f, 1.0f);
    return t;
  };
  const Tensor x = rnd({n, d}), r = rnd({n, d}), w = rnd({d}), gu = rnd({n, 2 * f});
  std::printf("device: %s\n", static_cast<cuda::CudaContext&>(*gpu).properties().str().c_str());
  const auto report = [](const char* name, double unfused_ms, double fused_ms) {
    std::printf("%-44s unfused %8.3f ms  fused %8.3f ms  (%.2fx)\n", name, unfused_ms, fused_ms,
                unfused_ms / fused_ms);
  };
  report("rmsnorm + quantize(T) [8192,4096]",
         median_ms(gpu, [&] { ops::quantize_per_tensor(ops::rmsnorm_forward(x, w, 1e-5).y, DType::E4M3, true); }),
         median_ms(gpu, [&] {
           ops::NormForward o = ops::rmsnorm_forward(x, w, 1e-5, true);
           ops::quantize_per_tensor_from_row_maxima(o.y, std::move(o.row_max), DType::E4M3, true);
         }));
  report("swiglu_packed + quantize(T) [8192,2x11008]",
         median_ms(gpu, [&] { ops::quantize_per_tensor(ops::swiglu_packed(gu), DType::E4M3, true); }),
         median_ms(gpu, [&] {
           Tensor maxima;
           const Tensor y = ops::swiglu_packed(gu, &maxima);
           ops::quantize_per_tensor_from_row_maxima(y, std::move(maxima), DType::E4M3, true);
         }));
  report("swiglu_packed + quantize 1x16 of gu [8192,2x11008]",
         median_ms(gpu, [&] {
           Tensor maxima;
           ops::swiglu_packed(gu, &maxima);
           ops::quantize_per_group(gu, 16, DType::E4M3);
         }),
         median_ms(gpu, [&] {
           Tensor maxima;
           ops::Fp8PerGroup copy;
           ops::swiglu_packed(gu, &maxima, &copy);
         }));
  report("add + quantize_per_group 1x16 [8192,4096]",
         median_ms(gpu, [&] { ops::quantize_per_group(ops::add(x, r), 16, DType::E4M3); }),
         median_ms(gpu, [&] { ops::add_quantize_per_group(x, r, 16, DType::E4M3); }));
  report("rmsnorm alone vs with row maxima", median_ms(gpu, [&] { ops::rmsnorm_forward(x, w, 1e-5); }),
         median_ms(gpu, [&] { ops::rmsnorm_forward(x, w, 1e-5, true); }));
  report("swiglu_packed alone vs with row maxima", median_ms(gpu, [&] { ops::swiglu_packed(gu); }),
         median_ms(gpu, [&] {
           Tensor maxima;
           ops::swiglu_packed(gu, &maxima);
         }));
#endif
}

}  // namespace
}  // namespace coat
