// The nn functions with fused producers on the CPU backend, against the same functions unfused:
//  - nn::add with a compressed copy makes the bytes save_input makes of the sum, exactly when the norm that
//    follows keeps its input compressed (gradients recorded, last dimension a multiple of 16), and nothing else;
//  - rms_norm / layer_norm given that copy keep the same bytes for the backward and give the same output and
//    gradients; their row maxima and swiglu_packed's are the ops' maxima of the output;
//  - linear_fp8 with the producer's row maxima gives the same output and gradients (both save policies).
// Every comparison is exact: the fused forms compute the same values in the same roundings.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "coat/autograd/tape.h"
#include "coat/nn/activation.h"
#include "coat/nn/compressed_save.h"
#include "coat/nn/linear.h"
#include "coat/nn/norm.h"
#include "coat/nn/residual.h"
#include "coat/ops/activation.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/elementwise.h"
#include "coat/ops/norm.h"
#include "coat/ops/reduce.h"
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
  Parameter w;
  w.name = "proj.weight";
  w.value = random_bf16({32, 64}, 43, 0.0, 0.1);
  w.grad = ops::zeros(cpu(), {32, 64}, DType::F32);
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
  autograd::Tape tape;
  test::expect_error_containing<InvalidArgument>(
      [&] { linear_fp8(tape, tape.leaf(x, true), w, weights, false, ops::zeros(cpu(), {47}, DType::F32)); },
      "48 rows");
}

}  // namespace
}  // namespace coat::nn
