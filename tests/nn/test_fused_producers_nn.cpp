// The nn functions with fused producers on the CPU backend, against the same functions unfused:
//  - nn::add with a compressed copy makes the bytes save_input makes of the sum, exactly when the norm that
//    follows keeps its input compressed (gradients recorded, last dimension a multiple of 16), and nothing else;
//  - rms_norm / layer_norm given that copy keep the same bytes for the backward and give the same output and
//    gradients; their row maxima and swiglu_packed's are the ops' maxima of the output;
//  - linear_fp8 with the producer's row maxima gives the same output and gradients (both save policies);
//  - the backward producers (SwiGLU's, the inverse RoPE of packed attention) hand their gradients' row maxima
//    to the FP8 linear before them, which then gives the same gradients as with its own amax pass.
// Every comparison is exact: the fused forms compute the same values in the same roundings.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "coat/autograd/tape.h"
#include "coat/nn/activation.h"
#include "coat/nn/compressed_save.h"
#include "coat/nn/linear.h"
#include "coat/nn/norm.h"
#include "coat/nn/packed_attention.h"
#include "coat/nn/residual.h"
#include "coat/ops/activation.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/elementwise.h"
#include "coat/ops/norm.h"
#include "coat/ops/reduce.h"
#include "coat/ops/rope.h"
#include "coat/ops/runtime.h"
#include "expect_error.h"
#include "random_values.h"

namespace coat::nn {
namespace {

ContextPtr cpu() {
  static ContextPtr context = ops::make_context(Device::cpu());
  return context;
}

Tensor random_bf16(const Shape& shape, uint32_t seed, double mean = 0.0, double scale = 1.0) {
  return test::nonzero_normal_tensor(cpu(), shape, DType::BF16, seed, mean, scale, 0.25);
}

void expect_same_bytes(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.defined(), want.defined()) << what;
  if (!want.defined()) return;
  EXPECT_EQ(got.shape(), want.shape()) << what;
  EXPECT_EQ(got.dtype(), want.dtype()) << what;
  EXPECT_TRUE(ops::to_bytes(got) == ops::to_bytes(want)) << what << ": bytes differ";
}

TEST(FusedProducersNn, AddMakesTheCompressedCopySaveInputWouldMake) {
  const Tensor a = random_bf16({2, 8, 64}, 1, 0.0, 3.0), b = random_bf16({2, 8, 64}, 2, 0.0, 0.1);
  autograd::Tape tape;
  ops::Fp8PerGroup copy;
  const autograd::Var h = add(tape, tape.leaf(a, true), tape.leaf(b, true), &copy);
  expect_same_bytes(h.value, ops::add(a, b), "sum");
  std::vector<Tensor> saved;
  const SavedInput in = save_input(tape, h.value, /*compress=*/true, saved);
  ASSERT_TRUE(in.compressed);
  expect_same_bytes(copy.codes, saved[0], "codes");
  expect_same_bytes(copy.scale_inv, saved[1], "scale_inv");
  EXPECT_EQ(copy.group_size, kCompressGroup);

  // No copy where the norm would not compress: forward-only tape, a last dimension that is no multiple of 16.
  autograd::Tape no_grad(/*grad_enabled=*/false);
  add(no_grad, no_grad.leaf(a), no_grad.leaf(b), &copy);
  EXPECT_FALSE(copy.codes.defined());
  const Tensor c = random_bf16({4, 24}, 3);
  const autograd::Var s = add(tape, tape.leaf(c, true), tape.leaf(c, true), &copy);
  EXPECT_FALSE(copy.codes.defined());
  expect_same_bytes(s.value, ops::add(c, c), "sum without a copy");
}

struct NormRun {
  Tensor y, da, db, dw, row_max;
  size_t saved = 0;
};

/// h = a + b, then the norm of h (compressed), backward from dy; `fused`: the add makes the norm's copy and
/// the norm writes its row maxima.
NormRun run_norm(bool rms, bool fused, const Tensor& a, const Tensor& b, const Tensor& dy, Parameter* w) {
  if (w != nullptr) ops::fill_(w->grad, 0.0);
  autograd::Tape tape;
  const autograd::Var va = tape.leaf(a, true), vb = tape.leaf(b, true);
  ops::Fp8PerGroup copy;
  const autograd::Var h = add(tape, va, vb, fused ? &copy : nullptr);
  NormRun r;
  Tensor* maxima = fused ? &r.row_max : nullptr;
  const autograd::Var y = rms ? rms_norm(tape, h, w, 1e-5, /*compress=*/true, fused ? &copy : nullptr, maxima)
                              : layer_norm(tape, h, 1e-5, /*compress=*/true, fused ? &copy : nullptr, maxima);
  r.saved = tape.saved_bytes();
  r.y = y.value;
  tape.backward(y, dy);
  r.da = tape.grad(va);
  r.db = tape.grad(vb);
  if (w != nullptr) r.dw = ops::clone(w->grad);
  return r;
}

TEST(FusedProducersNn, NormsTakeTheAddsCopyAndGiveTheSameBytes) {
  const Shape shape{2, 16, 96};
  const Tensor a = random_bf16(shape, 11, 0.2, 2.0), b = random_bf16(shape, 12, 0.0, 0.2);
  const Tensor dy = random_bf16(shape, 13, 0.0, 0.1);
  Parameter w;
  w.name = "norm.weight";
  w.value = random_bf16({96}, 14, 1.0, 0.2);
  w.grad = ops::zeros(cpu(), {96}, DType::F32);
  for (bool rms : {true, false}) {
    const std::string what = rms ? "rms_norm" : "layer_norm";
    Parameter* weight = rms ? &w : nullptr;
    const NormRun plain = run_norm(rms, false, a, b, dy, weight);
    const NormRun fused = run_norm(rms, true, a, b, dy, weight);
    EXPECT_EQ(fused.saved, plain.saved) << what;
    expect_same_bytes(fused.y, plain.y, what + " y");
    expect_same_bytes(fused.da, plain.da, what + " da");
    expect_same_bytes(fused.db, plain.db, what + " db");
    if (rms) expect_same_bytes(fused.dw, plain.dw, what + " dweight");
    // The maxima are those of the op's output.
    const Tensor h2 = ops::add(a, b).reshape({32, 96});
    const ops::NormForward f =
        rms ? ops::rmsnorm_forward(h2, w.value, 1e-5, true) : ops::layernorm_forward(h2, 1e-5, true);
    expect_same_bytes(fused.row_max, f.row_max, what + " row maxima");
  }
}

TEST(FusedProducersNn, NormsRefuseACopyOfAnotherTensor) {
  const Tensor x = random_bf16({4, 32}, 21);
  ops::Fp8PerGroup other = ops::quantize_per_group(random_bf16({4, 48}, 22), kCompressGroup, DType::E4M3);
  autograd::Tape tape;
  test::expect_error_containing<InvalidArgument>(
      [&] { layer_norm(tape, tape.leaf(x, true), 1e-5, true, &other); }, "is not a contiguous copy of the input");
  ops::Fp8PerGroup wrong_group = ops::quantize_per_group(x, 32, DType::E4M3);
  test::expect_error_containing<InvalidArgument>(
      [&] { layer_norm(tape, tape.leaf(x, true), 1e-5, true, &wrong_group); }, "groups of 16");
}

TEST(FusedProducersNn, SwigluReturnsTheRowMaximaOfItsOutput) {
  const Tensor gu = random_bf16({2, 8, 2 * 48}, 31, 0.0, 2.0);
  autograd::Tape tape;
  Tensor row_max;
  const autograd::Var y = swiglu_packed(tape, tape.leaf(gu, true), /*compress=*/true, &row_max);
  Tensor want;
  expect_same_bytes(y.value, ops::swiglu_packed(gu, &want), "y");
  expect_same_bytes(row_max, want, "row maxima");
  EXPECT_EQ(row_max.shape(), Shape({16}));
}

/// A BF16 weight [out, in] (values ~ N(0, 0.1)) with a zeroed F32 gradient.
Parameter random_weight(const std::string& name, int64_t out, int64_t in, uint32_t seed) {
  Parameter w;
  w.name = name;
  w.value = random_bf16({out, in}, seed, 0.0, 0.1);
  w.grad = ops::zeros(cpu(), {out, in}, DType::F32);
  return w;
}

struct LinearRun {
  Tensor y, dx, dw;
  size_t saved = 0;
};

/// norm -> linear_fp8, backward from dy; `fused`: the linear takes the norm's row maxima.
LinearRun run_linear(bool fused, bool save_fp8_input, const Tensor& x, Parameter& w, Fp8Weights& weights,
                     const Tensor& dy) {
  ops::fill_(w.grad, 0.0);
  autograd::Tape tape;
  const autograd::Var vx = tape.leaf(x, true);
  Tensor maxima;
  const autograd::Var n = layer_norm(tape, vx, 1e-5, false, nullptr, fused ? &maxima : nullptr);
  const autograd::Var y = linear_fp8(tape, n, w, weights, save_fp8_input, std::move(maxima));
  LinearRun r;
  r.saved = tape.saved_bytes();
  r.y = y.value;
  tape.backward(y, dy);
  r.dx = tape.grad(vx);
  r.dw = ops::clone(w.grad);
  return r;
}

TEST(FusedProducersNn, LinearFp8WithRowMaximaGivesTheSameBytes) {
  const Tensor x = random_bf16({48, 64}, 41, 0.5, 3.0);
  const Tensor dy = random_bf16({48, 32}, 42, 0.0, 0.01);
  Parameter w = random_weight("proj.weight", 32, 64, 43);
  Fp8Weights weights;
  for (bool save_fp8_input : {false, true}) {
    const std::string what = save_fp8_input ? "keeping FP8 x^T" : "keeping x";
    const LinearRun plain = run_linear(false, save_fp8_input, x, w, weights, dy);
    const LinearRun fused = run_linear(true, save_fp8_input, x, w, weights, dy);
    EXPECT_EQ(fused.saved, plain.saved) << what;
    expect_same_bytes(fused.y, plain.y, what + " y");
    expect_same_bytes(fused.dx, plain.dx, what + " dx");
    expect_same_bytes(fused.dw, plain.dw, what + " dw");
  }
  // Keeping the forward's FP8 x^T instead of x (every FP8 recipe does) gives the bytes of quantising x again in
  // the backward, with less saved.
  const LinearRun kept_x = run_linear(false, false, x, w, weights, dy);
  const LinearRun kept_fp8 = run_linear(false, true, x, w, weights, dy);
  EXPECT_LT(kept_fp8.saved, kept_x.saved);
  expect_same_bytes(kept_fp8.y, kept_x.y, "FP8 x^T against x: y");
  expect_same_bytes(kept_fp8.dx, kept_x.dx, "FP8 x^T against x: dx");
  expect_same_bytes(kept_fp8.dw, kept_x.dw, "FP8 x^T against x: dw");
  autograd::Tape tape;
  test::expect_error_containing<InvalidArgument>(
      [&] { linear_fp8(tape, tape.leaf(x, true), w, weights, false, ops::zeros(cpu(), {47}, DType::F32)); },
      "48 rows");
}

struct MlpRun {
  Tensor dx, dw;
};

/// linear_fp8 (gate/up) -> swiglu_packed, backward from ds; `slot`: the SwiGLU backward hands dgu's row
/// maxima to the linear's backward.
MlpRun run_gate_up(const GradRowMaximaSlot& slot, const Tensor& x, Parameter& w, Fp8Weights& weights,
                   const Tensor& ds) {
  ops::fill_(w.grad, 0.0);
  autograd::Tape tape;
  const autograd::Var vx = tape.leaf(x, true);
  const autograd::Var gu = linear_fp8(tape, vx, w, weights, /*save_fp8_input=*/true, Tensor(), slot);
  const autograd::Var s = swiglu_packed(tape, gu, /*compress=*/true, nullptr, slot);
  tape.backward(s, ds);
  return {tape.grad(vx), ops::clone(w.grad)};
}

TEST(FusedProducersNn, SwigluBackwardHandsItsGradientsRowMaximaToTheLinear) {
  const Tensor x = random_bf16({32, 64}, 51, 0.0, 1.0);
  const Tensor ds = random_bf16({32, 48}, 52, 0.0, 0.01);
  Parameter w = random_weight("gate_up.weight", 96, 64, 53);
  Fp8Weights weights;
  const MlpRun plain = run_gate_up(nullptr, x, w, weights, ds);
  const GradRowMaximaSlot slot = std::make_shared<GradRowMaxima>();
  const MlpRun fused = run_gate_up(slot, x, w, weights, ds);
  EXPECT_EQ(slot->hits(), 1) << "the linear's backward did not take the SwiGLU's maxima";
  EXPECT_EQ(slot->misses(), 0);
  expect_same_bytes(fused.dx, plain.dx, "dx");
  expect_same_bytes(fused.dw, plain.dw, "dw");
}

TEST(FusedProducersNn, SwigluBackwardRowMaximaAreThoseOfItsGradient) {
  const Tensor gu = random_bf16({3, 5, 2 * 40}, 55, 0.0, 2.0);
  const Tensor dy = random_bf16({3, 5, 40}, 56, 0.0, 1.0);
  Tensor maxima;
  const Tensor dgu = ops::swiglu_packed_backward(dy, gu, &maxima);
  expect_same_bytes(dgu, ops::swiglu_packed_backward(dy, gu), "dgu with maxima vs without");
  EXPECT_EQ(maxima.shape(), Shape({15}));
  expect_same_bytes(maxima, ops::group_amax(dgu, 80).reshape({15}), "maxima vs max |dgu| per row");
}

// gu kept compressed (COAT): the backward from the codes gives the bytes of the backward from the restored gu.
TEST(FusedProducersNn, SwigluBackwardFromTheCompressedCopyGivesTheSameBytes) {
  for (int64_t f : {40, 48}) {  // 2F a multiple of 16; F itself not always
    const Tensor gu = random_bf16({3, 5, 2 * f}, 57, 0.0, 2.0);
    const Tensor dy = random_bf16({3, 5, f}, 58, 0.0, 1.0);
    const ops::Fp8PerGroup q = ops::quantize_per_group(gu, kCompressGroup, DType::E4M3);
    Tensor maxima, want_maxima;
    const Tensor dgu = ops::swiglu_packed_backward_compressed(dy, q.codes, q.scale_inv, &maxima);
    const Tensor want = ops::swiglu_packed_backward(dy, ops::dequantize(q, DType::BF16), &want_maxima);
    expect_same_bytes(dgu, want, "dgu from codes, F = " + std::to_string(f));
    expect_same_bytes(maxima, want_maxima, "maxima from codes, F = " + std::to_string(f));
  }
  const ops::Fp8PerGroup q = ops::quantize_per_group(random_bf16({4, 32}, 59), kCompressGroup, DType::E4M3);
  test::expect_error_containing<InvalidArgument>(
      [&] { ops::swiglu_packed_backward_compressed(random_bf16({4, 12}, 60), q.codes, q.scale_inv); },
      "dy has shape (4,12); expected (4,16) for gu (4,32)");
  test::expect_error_containing<InvalidArgument>(
      [&] { ops::swiglu_packed_backward_compressed(random_bf16({4, 16}, 60), q.codes, q.scale_inv.slice(1, 0, 1)); },
      "one value per 16 codes");
}

TEST(FusedProducersNn, TheLinearUsesMaximaOnlyForItsOwnGradient) {
  const Tensor x = random_bf16({32, 64}, 61, 0.0, 1.0);
  const Tensor dy = random_bf16({32, 96}, 62, 0.0, 0.01);
  Parameter w = random_weight("proj.weight", 96, 64, 63);
  Fp8Weights weights;
  const auto backward = [&](const GradRowMaximaSlot& slot, const Tensor& put_for, const Tensor& maxima) {
    ops::fill_(w.grad, 0.0);
    autograd::Tape tape;
    const autograd::Var y = linear_fp8(tape, tape.leaf(x, true), w, weights, true, Tensor(), slot);
    if (slot) slot->put(put_for, maxima);
    tape.backward(y, dy);
    return ops::clone(w.grad);
  };
  const Tensor plain = backward(nullptr, Tensor(), Tensor());
  // Maxima that are not dy's (3x too large: another scale, not a power of two, so the codes round
  // otherwise) change the gradient: the slot is what the
  // backward reads...
  const Tensor three = ops::scale(ops::group_amax(dy, 96).reshape({32}), 3.0);
  const GradRowMaximaSlot taken = std::make_shared<GradRowMaxima>();
  EXPECT_FALSE(ops::to_double_vector(backward(taken, dy, three)) == ops::to_double_vector(plain));
  EXPECT_EQ(taken->hits(), 1);
  // ...but only when they were put for the very gradient it receives: another tensor's are ignored.
  const GradRowMaximaSlot other = std::make_shared<GradRowMaxima>();
  expect_same_bytes(backward(other, ops::clone(dy), three), plain, "maxima of a copy of dy");
  EXPECT_EQ(other->hits(), 0);
  EXPECT_EQ(other->misses(), 1);
}

// The inverse RoPE writes the maxima of whole token rows: the rotated q and k heads and the untouched v heads.
TEST(FusedProducersNn, RopeRowMaximaAreThoseOfTheRotatedRows) {
  const std::vector<double> inv_freq = ops::rope_inverse_frequencies(1e4, 16);
  for (const int64_t rotary : {int64_t(0), int64_t(3), int64_t(4)}) {
    const std::string what = "rotary heads " + std::to_string(rotary);
    Tensor x = random_bf16({2, 5, 4, 16}, 71, 0.0, 1.0);
    // A v head with the row's largest value: its maximum must count although the kernel does not rotate it.
    Tensor v_head = x.slice(2, 3, 4).slice(1, 1, 2);
    ops::fill_(v_head, rotary == 4 ? 1.0 : 40.0);
    Tensor plain = ops::clone(x), fused = ops::clone(x), maxima;
    ops::rope_(plain, inv_freq, 2, /*inverse=*/true, rotary);
    ops::rope_(fused, inv_freq, 2, /*inverse=*/true, rotary, &maxima);
    expect_same_bytes(fused, plain, what + ": rotated values");
    EXPECT_EQ(maxima.shape(), Shape({10})) << what;
    expect_same_bytes(maxima, ops::group_amax(plain.reshape({10, 64}), 64).reshape({10}), what + ": maxima");
    if (rotary < 4) {
      EXPECT_EQ(ops::to_double_vector(maxima)[1], 40.0) << what;
    }
    // A strided x (a slice of a longer token axis) goes through a copy and gives the same.
    Tensor wide = random_bf16({2, 5, 8, 16}, 72);
    Tensor view = wide.slice(2, 0, 4);
    ops::copy_(view, x);
    Tensor view_maxima;
    ops::rope_(view, inv_freq, 2, true, rotary, &view_maxima);
    expect_same_bytes(ops::contiguous(view), plain, what + ": strided values");
    expect_same_bytes(view_maxima, maxima, what + ": strided maxima");
  }
  Tensor f64 = ops::zeros(cpu(), {1, 2, 2, 4}, DType::F64);
  Tensor m;
  test::expect_error_containing<InvalidArgument>(
      [&] { ops::rope_(f64, ops::rope_inverse_frequencies(1e4, 4), 0, true, std::nullopt, &m); },
      "row maxima are written for f32 and bf16 x, not f64");
}

struct QkvRun {
  Tensor dx, dw;
};

/// linear_fp8 (packed q/k/v) -> packed_attention, backward from do; `slot`: the attention's backward hands
/// dqkv's row maxima to the linear's backward.
QkvRun run_qkv(const GradRowMaximaSlot& slot, const Tensor& x, Parameter& w, Fp8Weights& weights, const Tensor& dout,
               int64_t hq, int64_t hkv, int64_t dh) {
  ops::fill_(w.grad, 0.0);
  autograd::Tape tape;
  const autograd::Var vx = tape.leaf(x, true);
  const autograd::Var qkv = linear_fp8(tape, vx, w, weights, /*save_fp8_input=*/true, Tensor(), slot);
  const autograd::Var o =
      packed_attention(tape, qkv, hq, hkv, dh, ops::rope_inverse_frequencies(1e4, dh), 0.25, slot);
  tape.backward(o, dout);
  return {tape.grad(vx), ops::clone(w.grad)};
}

TEST(FusedProducersNn, PackedAttentionHandsItsGradientsRowMaximaToTheLinear) {
  const int64_t hq = 4, hkv = 2, dh = 16;
  const Tensor x = random_bf16({2, 8, 32}, 73, 0.0, 1.0);
  const Tensor dout = random_bf16({2, 8, hq * dh}, 74, 0.0, 0.01);
  Parameter w = random_weight("qkv.weight", (hq + 2 * hkv) * dh, 32, 75);
  Fp8Weights weights;
  const QkvRun plain = run_qkv(nullptr, x, w, weights, dout, hq, hkv, dh);
  const GradRowMaximaSlot slot = std::make_shared<GradRowMaxima>();
  const QkvRun fused = run_qkv(slot, x, w, weights, dout, hq, hkv, dh);
  EXPECT_EQ(slot->hits(), 1) << "the linear's backward did not take the inverse RoPE's maxima";
  EXPECT_EQ(slot->misses(), 0);
  expect_same_bytes(fused.dx, plain.dx, "dx");
  expect_same_bytes(fused.dw, plain.dw, "dw");
}

// The norm's backward takes the gradient x's other use gave first (the residual stream's) and returns the sum
// from its own kernel: the bytes the tape's add would make; its maxima go to the slot for that summed gradient.
TEST(FusedProducersNn, NormBackwardSumsTheResidualGradientAndHandsItsMaxima) {
  const Tensor x = random_bf16({2, 8, 32}, 81, 0.3, 1.0);
  const Tensor g = random_bf16({2, 8, 32}, 82, 0.0, 0.05);
  Parameter w = random_weight("norm.weight", 1, 32, 83);
  w.value = w.value.reshape({32});
  w.grad = w.grad.reshape({32});
  for (bool rms : {true, false}) {
    for (bool fuse : {true, false}) {  // off: the tape adds the two gradients (the same bytes)
      const GradRowMaximaSlot slot = fuse ? std::make_shared<GradRowMaxima>() : nullptr;
      const NormFusion fusion{fuse, fuse, slot};
      autograd::Tape tape;
      const autograd::Var vx = tape.leaf(x, true);
      const autograd::Var n = rms ? rms_norm(tape, vx, &w, 1e-5, false, nullptr, nullptr, fusion)
                                  : layer_norm(tape, vx, 1e-5, false, nullptr, nullptr, fusion);
      tape.backward(add(tape, vx, n), g);
      const Tensor dx = tape.grad(vx);
      Tensor want;
      if (rms) {
        const ops::NormForward f = ops::rmsnorm_forward(x.reshape({16, 32}), w.value, 1e-5);
        Tensor dw = ops::zeros(cpu(), {32}, DType::F32);
        want = ops::add(g.reshape({16, 32}), ops::rmsnorm_backward(g.reshape({16, 32}), x.reshape({16, 32}),
                                                                 w.value, f.rstd, dw));
      } else {
        const ops::NormForward f = ops::layernorm_forward(x.reshape({16, 32}), 1e-5);
        want = ops::add(g.reshape({16, 32}), ops::layernorm_backward(g.reshape({16, 32}), x.reshape({16, 32}),
                                                                   f.mean, f.rstd));
      }
      const std::string what = std::string(rms ? "rms_norm" : "layer_norm") + (fuse ? "" : " unfused");
      expect_same_bytes(dx, want.reshape({2, 8, 32}), what + " dx");
      if (fuse) {
        expect_same_bytes(slot->take(dx), ops::group_amax(want, 32).reshape({16}), what + " maxima");
        EXPECT_EQ(slot->hits(), 1) << what;
      }
    }
  }
}

}  // namespace
}  // namespace coat::nn
