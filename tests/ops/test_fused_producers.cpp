// The fused producing ops on the CPU backend (the reference of their CUDA kernels):
//  - the row maxima that RMSNorm, LayerNorm and the packed SwiGLU write equal ops::amax of each output row,
//    bit for bit (NaN and inf propagate), and asking for them changes nothing else;
//  - the norm backwards with the residual gradient give the bytes of ops::add(residual, dx) and their row
//    maxima those of that sum, the weight gradient unchanged;
//  - quantize_per_tensor_from_row_maxima gives the bytes of quantize_per_tensor (codes, codes_t, scale,
//    scale_inv), NaN / inf / all-zero / subnormal tensors included;
//  - add_quantize_per_group gives the bytes of ops::add followed by quantize_per_group of the sum.
// Every comparison is exact: the fused forms run the same scalar operations in the same roundings, and a max is
// exact in any order.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "coat/ops/activation.h"
#include "coat/ops/add_quantize.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/elementwise.h"
#include "coat/ops/norm.h"
#include "coat/ops/quantize.h"
#include "coat/ops/reduce.h"
#include "coat/ops/runtime.h"
#include "expect_error.h"
#include "random_values.h"

namespace coat {
namespace {

constexpr uint32_t kCanonicalNan = 0x7FFFFFFFu;
constexpr uint32_t kInfBits = 0x7F800000u;

ContextPtr cpu() {
  static ContextPtr context = ops::make_context(Device::cpu());
  return context;
}

/// Normal values around `mean`, never exactly zero.
Tensor random_tensor(const Shape& shape, DType t, uint32_t seed, double mean = 0.0, double scale = 1.0) {
  return test::nonzero_normal_tensor(cpu(), shape, t, seed, mean, scale);
}

void expect_same_bytes(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.defined(), want.defined()) << what;
  if (!want.defined()) return;
  EXPECT_EQ(got.dtype(), want.dtype()) << what;
  EXPECT_EQ(got.shape(), want.shape()) << what;
  EXPECT_TRUE(ops::to_bytes(got) == ops::to_bytes(want)) << what << ": bytes differ";
}

std::vector<uint32_t> float_bits(const Tensor& t) {
  const std::vector<uint8_t> bytes = ops::to_bytes(t);
  std::vector<uint32_t> bits(bytes.size() / 4);
  std::memcpy(bits.data(), bytes.data(), bytes.size());
  return bits;
}

/// The reference of row maxima: ops::amax (the tensor amax quantize_per_tensor takes) of each row of y.
std::vector<uint32_t> row_amax_bits(const Tensor& y) {
  const int64_t d = y.size(-1), rows = y.numel() / d;
  const Tensor y2 = ops::contiguous(y).reshape({rows, d});
  std::vector<uint32_t> bits;
  for (int64_t r = 0; r < rows; ++r) bits.push_back(float_bits(ops::amax(y2.select(0, r)))[0]);
  return bits;
}

std::string label(const char* op, const Shape& shape, DType t, const std::string& extra = "") {
  return std::string(op) + " " + shape_str(shape) + " " + std::string(dtype_name(t)) + extra;
}

Tensor with_value(Tensor t, int64_t index, double value) {
  std::vector<double> v = ops::to_double_vector(t);
  v[static_cast<size_t>(index)] = value;
  return ops::from_vector(t.context(), t.shape(), t.dtype(), v);
}

// ---- row maxima of the producers ----

TEST(FusedProducers, NormRowMaximaAreTheRowAmaxAndChangeNothingElse) {
  uint32_t seed = 10;
  for (DType t : {DType::F32, DType::BF16}) {
    for (const Shape& shape : {Shape{5, 7}, Shape{33, 64}, Shape{2, 3, 96}, Shape{1, 1}}) {
      const Tensor x = random_tensor(shape, t, ++seed, 0.2, 1.5);
      for (bool affine : {true, false}) {
        const Tensor w = affine ? random_tensor({shape.back()}, t, ++seed, 1.0, 0.3) : Tensor();
        const ops::NormForward plain = ops::rmsnorm_forward(x, w, 1e-5);
        const ops::NormForward fused = ops::rmsnorm_forward(x, w, 1e-5, /*with_row_max=*/true);
        const std::string what = label("rmsnorm", shape, t, affine ? "" : " no weight");
        EXPECT_FALSE(plain.row_max.defined()) << what;
        expect_same_bytes(fused.y, plain.y, what + " y");
        expect_same_bytes(fused.rstd, plain.rstd, what + " rstd");
        ASSERT_EQ(fused.row_max.dtype(), DType::F32) << what;
        EXPECT_EQ(float_bits(fused.row_max), row_amax_bits(plain.y)) << what;
      }
      const ops::NormForward plain = ops::layernorm_forward(x, 1e-5);
      const ops::NormForward fused = ops::layernorm_forward(x, 1e-5, /*with_row_max=*/true);
      const std::string what = label("layernorm", shape, t);
      expect_same_bytes(fused.y, plain.y, what + " y");
      expect_same_bytes(fused.mean, plain.mean, what + " mean");
      expect_same_bytes(fused.rstd, plain.rstd, what + " rstd");
      EXPECT_EQ(float_bits(fused.row_max), row_amax_bits(plain.y)) << what;
    }
  }
}

// The backward with the residual stream's gradient added in its kernel (the MLP and input norms in a block):
// the bytes of ops::add(residual, dx), dweight as without it, and the maxima of the summed rows. F64 adds too
// (gradient checks), without maxima.
TEST(FusedProducers, NormBackwardAddsTheResidualAndGivesItsRowMaxima) {
  uint32_t seed = 30;
  for (DType t : {DType::F32, DType::BF16, DType::F64}) {
    for (const Shape& shape : {Shape{5, 7}, Shape{33, 64}, Shape{2, 3, 96}}) {
      const Tensor x = random_tensor(shape, t, ++seed, 0.2, 1.5);
      const Tensor dy = random_tensor(shape, t, ++seed, 0.0, 0.1);
      // A residual gradient both larger and smaller than dx, so that the sum rounds.
      const Tensor residual = random_tensor(shape, t, ++seed, 0.0, 0.05);
      Tensor* no_max = nullptr;
      Tensor row_max, layer_max;
      const bool maxima = t != DType::F64;
      for (bool affine : {true, false}) {
        const Tensor w = affine ? random_tensor({shape.back()}, t, ++seed, 1.0, 0.3) : Tensor();
        const ops::NormForward f = ops::rmsnorm_forward(x, w, 1e-5);
        const DType acc = t == DType::F64 ? DType::F64 : DType::F32;
        Tensor dw_plain = affine ? ops::zeros(cpu(), {shape.back()}, acc) : Tensor();
        Tensor dw_fused = affine ? ops::zeros(cpu(), {shape.back()}, acc) : Tensor();
        const Tensor plain = ops::add(residual, ops::rmsnorm_backward(dy, x, w, f.rstd, dw_plain));
        const Tensor fused = ops::rmsnorm_backward(dy, x, w, f.rstd, dw_fused, residual, maxima ? &row_max : no_max);
        const std::string what = label("rmsnorm_backward + residual", shape, t, affine ? "" : " no weight");
        expect_same_bytes(fused, plain, what + " dx");
        if (affine) expect_same_bytes(dw_fused, dw_plain, what + " dweight");
        if (maxima) {
          EXPECT_EQ(float_bits(row_max), row_amax_bits(plain)) << what;
        }
      }
      const ops::NormForward f = ops::layernorm_forward(x, 1e-5);
      const Tensor plain = ops::add(residual, ops::layernorm_backward(dy, x, f.mean, f.rstd));
      const Tensor fused = ops::layernorm_backward(dy, x, f.mean, f.rstd, residual, maxima ? &layer_max : no_max);
      const std::string what = label("layernorm_backward + residual", shape, t);
      expect_same_bytes(fused, plain, what + " dx");
      if (maxima) {
        EXPECT_EQ(float_bits(layer_max), row_amax_bits(plain)) << what;
      }
      // Maxima without a residual: those of dx itself.
      Tensor alone;
      const Tensor dx = ops::layernorm_backward(dy, x, f.mean, f.rstd, Tensor(), maxima ? &alone : no_max);
      if (maxima) {
        EXPECT_EQ(float_bits(alone), row_amax_bits(dx)) << what << " without residual";
      }
    }
  }
  const Tensor x = random_tensor({4, 8}, DType::BF16, 40);
  const ops::NormForward f = ops::layernorm_forward(x, 1e-5);
  test::expect_error_containing<InvalidArgument>(
      [&] { ops::layernorm_backward(x, x, f.mean, f.rstd, random_tensor({4, 9}, DType::BF16, 41)); },
      "residual has shape (4,9) but x has (4,8)");
  Tensor m;
  const Tensor x64 = random_tensor({4, 8}, DType::F64, 42);
  const ops::NormForward f64 = ops::layernorm_forward(x64, 1e-5);
  test::expect_error_containing<InvalidArgument>(
      [&] { ops::layernorm_backward(x64, x64, f64.mean, f64.rstd, Tensor(), &m); }, "not f64");
}

// The backwards from COAT's compressed x: the bytes of the backward of the restored x (residual and maxima too),
// and the compressed copy's shape checked.
TEST(FusedProducers, NormBackwardFromTheCompressedInputIsTheBackwardOfTheRestoredInput) {
  uint32_t seed = 50;
  for (DType t : {DType::F32, DType::BF16}) {
    for (const Shape& shape : {Shape{5, 32}, Shape{2, 3, 96}}) {
      const Tensor x = random_tensor(shape, t, ++seed, 0.2, 1.5);
      const Tensor dy = random_tensor(shape, t, ++seed, 0.0, 0.1);
      const Tensor residual = random_tensor(shape, t, ++seed, 0.0, 0.05);
      const Tensor w = random_tensor({shape.back()}, t, ++seed, 1.0, 0.3);
      const ops::Fp8PerGroup q = ops::quantize_per_group(x, 16, DType::E4M3);
      const Tensor restored = ops::dequantize(q, t);
      const std::string what = label("norm backward from codes", shape, t);
      const ops::NormForward f = ops::rmsnorm_forward(restored, w, 1e-5);
      Tensor dw_want = ops::zeros(cpu(), {shape.back()}, DType::F32), dw_got = ops::zeros(cpu(), {shape.back()}, DType::F32);
      Tensor want_max, got_max;
      const Tensor want = ops::rmsnorm_backward(dy, restored, w, f.rstd, dw_want, residual, &want_max);
      const Tensor got = ops::rmsnorm_backward_compressed(dy, q.codes, q.scale_inv, w, f.rstd, dw_got, residual, &got_max);
      expect_same_bytes(got, want, what + " rmsnorm dx");
      expect_same_bytes(dw_got, dw_want, what + " rmsnorm dweight");
      expect_same_bytes(got_max, want_max, what + " rmsnorm maxima");
      const ops::NormForward l = ops::layernorm_forward(restored, 1e-5);
      expect_same_bytes(ops::layernorm_backward_compressed(dy, q.codes, q.scale_inv, l.mean, l.rstd),
                        ops::layernorm_backward(dy, restored, l.mean, l.rstd), what + " layernorm dx");
    }
  }
  const Tensor dy = random_tensor({4, 32}, DType::BF16, 60);
  const ops::Fp8PerGroup q = ops::quantize_per_group(random_tensor({4, 32}, DType::BF16, 61), 16, DType::E4M3);
  const ops::NormForward l = ops::layernorm_forward(dy, 1e-5);
  test::expect_error_containing<InvalidArgument>(
      [&] { ops::layernorm_backward_compressed(dy.slice(1, 0, 16), q.codes, q.scale_inv, l.mean, l.rstd); },
      "x's codes must be E4M3 of dy's shape (4,16)");
  test::expect_error_containing<InvalidArgument>(
      [&] { ops::layernorm_backward_compressed(dy, q.codes, q.scale_inv.slice(1, 0, 1), l.mean, l.rstd); },
      "one value per 16 codes");
}

TEST(FusedProducers, SwigluRowMaximaAreTheRowAmaxAndChangeNothingElse) {
  uint32_t seed = 20;
  for (DType t : {DType::F32, DType::BF16}) {
    for (const Shape& shape : {Shape{4, 96}, Shape{3, 5, 80}, Shape{17, 2}}) {
      const Tensor gu = random_tensor(shape, t, ++seed, 0.0, 2.0);
      Tensor row_max;
      const Tensor fused = ops::swiglu_packed(gu, &row_max);
      const Tensor plain = ops::swiglu_packed(gu);
      const std::string what = label("swiglu_packed", shape, t);
      expect_same_bytes(fused, plain, what + " y");
      ASSERT_EQ(row_max.numel(), plain.numel() / plain.size(-1)) << what;
      EXPECT_EQ(float_bits(row_max), row_amax_bits(plain)) << what;
    }
  }
}

TEST(FusedProducers, SwigluCompressedCopyIsQuantizePerGroupOfGu) {
  uint32_t seed = 60;
  for (DType t : {DType::F32, DType::BF16}) {
    for (const Shape& shape : {Shape{4, 2 * 16}, Shape{3, 5, 2 * 48}}) {
      const Tensor gu = random_tensor(shape, t, ++seed, 0.0, 2.0);
      ops::Fp8PerGroup copy;
      const Tensor y = ops::swiglu_packed(gu, nullptr, &copy);
      const std::string what = label("swiglu_packed compressed", shape, t);
      expect_same_bytes(y, ops::swiglu_packed(gu), what + " y");
      const ops::Fp8PerGroup ref = ops::quantize_per_group(gu, 16, DType::E4M3);
      EXPECT_EQ(copy.group_size, 16) << what;
      expect_same_bytes(copy.codes, ref.codes, what + " codes");
      expect_same_bytes(copy.scale_inv, ref.scale_inv, what + " scale_inv");
    }
  }
  ops::Fp8PerGroup copy;
  test::expect_error_containing<InvalidArgument>(
      [&] { ops::swiglu_packed(random_tensor({2, 2 * 24}, DType::BF16, 70), nullptr, &copy); }, "multiple of 16");
}

TEST(FusedProducers, RowMaximaPropagateNanAndInf) {
  // RMSNorm: a NaN in row 1 makes the row NaN; an inf weight makes every row's max inf (x has no zeros), except
  // row 1 (NaN above inf).
  Tensor x = with_value(random_tensor({3, 32}, DType::BF16, 31), 40, std::nan(""));
  Tensor w = with_value(random_tensor({32}, DType::BF16, 32, 1.0, 0.2), 5, INFINITY);
  const ops::NormForward f = ops::rmsnorm_forward(x, w, 1e-5, true);
  EXPECT_EQ(float_bits(f.row_max), (std::vector<uint32_t>{kInfBits, kCanonicalNan, kInfBits}));
  const ops::NormForward l = ops::layernorm_forward(x, 1e-5, true);
  EXPECT_EQ(float_bits(l.row_max)[1], kCanonicalNan);
  EXPECT_EQ(float_bits(l.row_max), row_amax_bits(l.y));
  // SwiGLU: up = inf in row 0 (gate positive: y = inf); gate = NaN in row 2.
  Tensor gu = random_tensor({3, 2 * 24}, DType::BF16, 33, 1.0, 0.1);  // gate > 0
  gu = with_value(with_value(gu, 24 + 3, INFINITY), 2 * 48 + 7, std::nan(""));
  Tensor row_max;
  const Tensor y = ops::swiglu_packed(gu, &row_max);
  const std::vector<uint32_t> bits = float_bits(row_max);
  EXPECT_EQ(bits[0], kInfBits);
  EXPECT_EQ(bits[2], kCanonicalNan);
  EXPECT_EQ(bits, row_amax_bits(y));
}

TEST(FusedProducers, RowMaximaAreRefusedForF64) {
  const Tensor x = random_tensor({4, 16}, DType::F64, 41);
  test::expect_error_containing<InvalidArgument>([&] { ops::rmsnorm_forward(x, Tensor(), 1e-5, true); }, "f64");
  test::expect_error_containing<InvalidArgument>([&] { ops::layernorm_forward(x, 1e-5, true); }, "f64");
  Tensor row_max;
  test::expect_error_containing<InvalidArgument>([&] { ops::swiglu_packed(x, &row_max); }, "f64");
}

// ---- per-tensor quantisation from row maxima ----

void expect_same_quantization(const ops::Fp8PerTensor& got, const ops::Fp8PerTensor& want, const std::string& what) {
  expect_same_bytes(got.codes, want.codes, what + " codes");
  expect_same_bytes(got.codes_t, want.codes_t, what + " codes_t");
  expect_same_bytes(got.scale, want.scale, what + " scale");
  expect_same_bytes(got.scale_inv, want.scale_inv, what + " scale_inv");
}

/// quantize_per_tensor_from_row_maxima(x, maxima) against quantize_per_tensor(x) in every mode.
void expect_matches_quantize(const Tensor& x, const Tensor& row_maxima, const std::string& what) {
  for (DType fmt : {DType::E4M3, DType::E5M2}) {
    for (Fp8Saturation sat : {Fp8Saturation::Saturate, Fp8Saturation::NoSaturate}) {
      for (bool transpose : {false, true}) {
        if (transpose && x.dim() != 2) continue;
        const std::string mode = what + " " + std::string(dtype_name(fmt)) +
                                 (sat == Fp8Saturation::Saturate ? " sat" : " nosat") + (transpose ? " T" : "");
        expect_same_quantization(ops::quantize_per_tensor_from_row_maxima(x, row_maxima, fmt, transpose, sat),
                                 ops::quantize_per_tensor(x, fmt, transpose, sat), mode);
      }
    }
  }
}

TEST(FusedProducers, QuantizeFromRowMaximaGivesTheBytesOfQuantize) {
  uint32_t seed = 50;
  // Random tensors of every input dtype, maxima from group_amax over whole rows.
  for (DType t : {DType::F32, DType::BF16, DType::F16}) {
    for (const Shape& shape : {Shape{16, 32}, Shape{48, 80}, Shape{2, 3, 64}, Shape{7, 5}}) {
      const Tensor x = random_tensor(shape, t, ++seed, 0.0, 3.0);
      expect_matches_quantize(x, ops::group_amax(x, shape.back()), label("random", shape, t));
    }
  }
  // The producers' own outputs with the maxima they wrote.
  const Tensor x = random_tensor({32, 64}, DType::BF16, ++seed, 0.3, 2.0);
  const ops::NormForward n = ops::rmsnorm_forward(x, random_tensor({64}, DType::BF16, ++seed, 1.0, 0.2), 1e-5, true);
  expect_matches_quantize(n.y, n.row_max, "rmsnorm output");
  const ops::NormForward l = ops::layernorm_forward(x, 1e-5, true);
  expect_matches_quantize(l.y, l.row_max, "layernorm output");
  Tensor s_max;
  const Tensor s = ops::swiglu_packed(x, &s_max);
  expect_matches_quantize(s, s_max, "swiglu output");
}

TEST(FusedProducers, QuantizeFromRowMaximaKeepsNonFiniteAndEdgeScales) {
  const Tensor base = random_tensor({16, 32}, DType::BF16, 61);
  // A NaN, an inf, a -inf: scale NaN, every code NaN, exactly as quantize_per_tensor.
  for (double bad : {std::nan(""), double{INFINITY}, -double{INFINITY}}) {
    const Tensor x = with_value(base, 77, bad);
    expect_matches_quantize(x, ops::group_amax(x, 32), "non-finite " + std::to_string(bad));
    const ops::Fp8PerTensor q = ops::quantize_per_tensor_from_row_maxima(x, ops::group_amax(x, 32), DType::E4M3);
    EXPECT_EQ(float_bits(q.scale)[0], kCanonicalNan);
  }
  // All zeros: scale 1. Subnormal values only: the quotient overflows, scale FLT_MAX.
  const Tensor zeros = ops::zeros(cpu(), {16, 32}, DType::F32);
  expect_matches_quantize(zeros, ops::group_amax(zeros, 32), "zeros");
  EXPECT_EQ(ops::quantize_per_tensor_from_row_maxima(zeros, ops::group_amax(zeros, 32), DType::E4M3).scale.item(),
            1.0);
  const Tensor tiny = ops::full(cpu(), {16, 32}, 1e-44, DType::F32);
  expect_matches_quantize(tiny, ops::group_amax(tiny, 32), "subnormal");
  EXPECT_EQ(ops::quantize_per_tensor_from_row_maxima(tiny, ops::group_amax(tiny, 32), DType::E4M3).scale.item(),
            static_cast<double>(std::numeric_limits<float>::max()));
}

TEST(FusedProducers, QuantizeFromRowMaximaChecksItsArguments) {
  const Tensor x = random_tensor({16, 32}, DType::BF16, 71);
  const std::string op = "quantize_per_tensor_from_row_maxima";
  test::expect_error_containing<InvalidArgument>(
      [&] { ops::quantize_per_tensor_from_row_maxima(x, ops::zeros(cpu(), {15}, DType::F32), DType::E4M3); },
      "16 rows");
  test::expect_error_containing<InvalidArgument>(
      [&] { ops::quantize_per_tensor_from_row_maxima(x, ops::zeros(cpu(), {16}, DType::BF16), DType::E4M3); },
      "f32");
  test::expect_error_containing<InvalidArgument>(
      [&] { ops::quantize_per_tensor_from_row_maxima(x, Tensor(), DType::E4M3); }, "undefined");
  test::expect_error_containing<InvalidArgument>(
      [&] { ops::quantize_per_tensor_from_row_maxima(x, ops::group_amax(x, 32), DType::BF16); }, "FP8");
}

// ---- fused add + group quantisation ----

TEST(FusedProducers, AddQuantizeGivesTheBytesOfAddThenQuantize) {
  uint32_t seed = 80;
  for (DType t : {DType::F32, DType::BF16, DType::F16}) {
    for (const Shape& shape : {Shape{4, 16}, Shape{3, 5, 64}, Shape{7, 256}}) {
      // Residual-like operands: b much smaller than a, so that the sum rounds.
      const Tensor a = random_tensor(shape, t, ++seed, 0.0, 4.0);
      const Tensor b = random_tensor(shape, t, ++seed, 0.0, 0.05);
      const Tensor sum = ops::add(a, b);
      for (int64_t group : {int64_t{16}, int64_t{32}, shape.back()}) {
        if (shape.back() % group != 0) continue;
        for (DType fmt : {DType::E4M3, DType::E5M2}) {
          for (Fp8Saturation sat : {Fp8Saturation::Saturate, Fp8Saturation::NoSaturate}) {
            const std::string what = label("add_quantize", shape, t, " group " + std::to_string(group) + " " +
                                                                          std::string(dtype_name(fmt)));
            const ops::SumAndGroups fused = ops::add_quantize_per_group(a, b, group, fmt, sat);
            const ops::Fp8PerGroup want = ops::quantize_per_group(sum, group, fmt, sat);
            expect_same_bytes(fused.sum, sum, what + " sum");
            expect_same_bytes(fused.groups.codes, want.codes, what + " codes");
            expect_same_bytes(fused.groups.scale_inv, want.scale_inv, what + " scale_inv");
            EXPECT_EQ(fused.groups.group_size, group) << what;
          }
        }
      }
    }
  }
}

TEST(FusedProducers, AddQuantizeKeepsNonFiniteAndZeroGroups) {
  // Group 0: a NaN; group 1: an inf; group 2: a sum that overflows bf16; group 3: all zeros (a = -b).
  Tensor a = random_tensor({1, 5 * 16}, DType::BF16, 91);
  a = with_value(with_value(a, 3, std::nan("")), 16 + 4, INFINITY);
  a = with_value(a, 32 + 1, 3.3e38);
  Tensor b = random_tensor({1, 5 * 16}, DType::BF16, 92);
  b = with_value(b, 32 + 1, 3.3e38);
  std::vector<double> av = ops::to_double_vector(a), bv = ops::to_double_vector(b);
  for (int i = 48; i < 64; ++i) bv[static_cast<size_t>(i)] = -av[static_cast<size_t>(i)];
  b = ops::from_vector(cpu(), b.shape(), DType::BF16, bv);
  const ops::SumAndGroups fused = ops::add_quantize_per_group(a, b, 16, DType::E4M3);
  const Tensor sum = ops::add(a, b);
  const ops::Fp8PerGroup want = ops::quantize_per_group(sum, 16, DType::E4M3);
  expect_same_bytes(fused.sum, sum, "sum");
  expect_same_bytes(fused.groups.codes, want.codes, "codes");
  expect_same_bytes(fused.groups.scale_inv, want.scale_inv, "scale_inv");
  const std::vector<uint32_t> si = float_bits(fused.groups.scale_inv);
  EXPECT_EQ(si[0], kCanonicalNan);
  EXPECT_EQ(si[1], kCanonicalNan);
  EXPECT_EQ(si[2], kCanonicalNan);
  EXPECT_EQ(fused.groups.scale_inv.select(1, 3).item(), 1.0);  // zero group: scale 1
}

TEST(FusedProducers, AddQuantizeChecksItsArguments) {
  const Tensor a = random_tensor({4, 32}, DType::BF16, 101);
  const std::string op = "add_quantize_per_group";
  test::expect_error_containing<InvalidArgument>(
      [&] { ops::add_quantize_per_group(a, random_tensor({4, 16}, DType::BF16, 1), 16, DType::E4M3); }, "match");
  test::expect_error_containing<InvalidArgument>(
      [&] { ops::add_quantize_per_group(a, random_tensor({4, 32}, DType::F32, 1), 16, DType::E4M3); }, "differ");
  test::expect_error_containing<InvalidArgument>([&] { ops::add_quantize_per_group(a, a, 24, DType::E4M3); },
                                                 "group size 24");
  test::expect_error_containing<InvalidArgument>([&] { ops::add_quantize_per_group(a, a, 16, DType::BF16); },
                                                 "FP8");
  const Tensor d = random_tensor({4, 32}, DType::F64, 102);
  test::expect_error_containing<InvalidArgument>([&] { ops::add_quantize_per_group(d, d, 16, DType::E4M3); },
                                                 "f64");
}

}  // namespace
}  // namespace coat
