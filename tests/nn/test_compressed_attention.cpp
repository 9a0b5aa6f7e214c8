// precision.compress_attention on the CPU backend: packed_attention keeping its rotated q, k, v and its output
// as FP8 E4M3 1x16 groups (nn::AttentionCompression):
//  - the tape keeps codes (1 byte per element) and one F32 scale per 16 elements instead of the BF16 tensors;
//  - the forward runs on the restored q, k and v, and the backward is exactly the attention backward of those
//    with the restored output (the same ops, composed here by hand): forward and backward see the same q, k, v;
//  - that gradient stays close to the uncompressed one (E4M3 keeps 3 mantissa bits: a few percent).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "coat/autograd/tape.h"
#include "coat/nn/compressed_save.h"
#include "coat/nn/packed_attention.h"
#include "coat/ops/attention.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/quantize.h"
#include "coat/ops/rope.h"
#include "coat/ops/runtime.h"
#include "random_values.h"

namespace coat::nn {
namespace {

constexpr int64_t kB = 2, kT = 8, kHq = 4, kHkv = 2, kDh = 16;
constexpr double kScale = 0.25;

ContextPtr cpu() {
  static ContextPtr context = ops::make_context(Device::cpu());
  return context;
}

Tensor random_bf16(const Shape& shape, uint32_t seed, double scale) {
  return test::nonzero_normal_tensor(cpu(), shape, DType::BF16, seed, 0.0, scale, 0.25);
}

struct AttentionRun {
  Tensor out, dqkv;
  size_t saved = 0;
};

AttentionRun run(const Tensor& qkv, const Tensor& dout, AttentionCompression compress) {
  autograd::Tape tape;
  const autograd::Var v = tape.leaf(ops::clone(qkv), true);  // rotated in place: a copy per run
  const autograd::Var o =
      packed_attention(tape, v, kHq, kHkv, kDh, ops::rope_inverse_frequencies(1e4, kDh), kScale, nullptr, compress);
  AttentionRun r;
  r.out = ops::clone(o.value);
  r.saved = tape.saved_bytes();
  tape.backward(o, dout);
  r.dqkv = tape.grad(v);
  return r;
}

Tensor restored(const Tensor& x) {
  return ops::dequantize(ops::quantize_per_group(x, kCompressGroup, DType::E4M3), x.dtype());
}

double relative_l2(const Tensor& got, const Tensor& want) {
  const std::vector<double> a = ops::to_double_vector(got), b = ops::to_double_vector(want);
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / den);
}

struct Fixture {
  Tensor qkv = random_bf16({kB, kT, (kHq + 2 * kHkv) * kDh}, 301, 1.0);
  Tensor dout = random_bf16({kB, kT, kHq * kDh}, 302, 0.05);
};

TEST(CompressedAttention, TheTapeKeepsCodesAndGroupScales) {
  const Fixture f;
  const AttentionRun plain = run(f.qkv, f.dout, {});
  const AttentionRun both = run(f.qkv, f.dout, {true, true});
  const AttentionRun qkv_only = run(f.qkv, f.dout, {true, false});
  const AttentionRun out_only = run(f.qkv, f.dout, {false, true});
  EXPECT_TRUE(ops::to_bytes(out_only.out) == ops::to_bytes(plain.out)) << "the output's compression changed the forward";
  EXPECT_FALSE(ops::to_bytes(both.out) == ops::to_bytes(plain.out)) << "q, k, v were not restored before the forward";
  const size_t qkv_elems = kB * kT * (kHq + 2 * kHkv) * kDh, out_elems = kB * kT * kHq * kDh;
  const size_t lse = kB * kHq * kT * 4;
  EXPECT_EQ(plain.saved, 2 * (qkv_elems + out_elems) + lse);
  const auto compressed = [](size_t n) { return n + n / kCompressGroup * 4; };
  EXPECT_EQ(both.saved, compressed(qkv_elems) + compressed(out_elems) + lse);
  EXPECT_EQ(qkv_only.saved, compressed(qkv_elems) + 2 * out_elems + lse);
}

TEST(CompressedAttention, ForwardAndBackwardAreThoseOfTheRestoredTensors) {
  const Fixture f;
  const AttentionRun both = run(f.qkv, f.dout, {true, true});
  // By hand: RoPE, restore q, k, v, the forward on them, restore the output, the backward, the inverse RoPE.
  const std::vector<double> freq = ops::rope_inverse_frequencies(1e4, kDh);
  Tensor packed = ops::clone(f.qkv).reshape({kB, kT, kHq + 2 * kHkv, kDh});
  ops::rope_(packed, freq, 0, /*inverse=*/false, kHq + kHkv);
  const auto heads = [](const Tensor& t, int64_t from, int64_t n) { return t.slice(2, from, from + n); };
  const Tensor rq = restored(packed);
  const ops::AttentionForward fwd =
      ops::attention_forward(heads(rq, 0, kHq), heads(rq, kHq, kHkv), heads(rq, kHq + kHkv, kHkv), kScale);
  EXPECT_TRUE(ops::to_bytes(both.out) == ops::to_bytes(fwd.out.reshape(both.out.shape())))
      << "the forward is not the attention of the restored q, k, v";
  const Tensor ro = restored(fwd.out);
  Tensor dqkv = ops::zeros(cpu(), packed.shape(), DType::BF16);
  Tensor dq = heads(dqkv, 0, kHq), dk = heads(dqkv, kHq, kHkv), dv = heads(dqkv, kHq + kHkv, kHkv);
  ops::attention_backward(f.dout.reshape(fwd.out.shape()), heads(rq, 0, kHq), heads(rq, kHq, kHkv),
                          heads(rq, kHq + kHkv, kHkv), ro, fwd.lse, kScale, dq, dk, dv);
  ops::rope_(dqkv, freq, 0, /*inverse=*/true, kHq + kHkv);
  EXPECT_TRUE(ops::to_bytes(both.dqkv) == ops::to_bytes(dqkv.reshape(f.qkv.shape())))
      << "the compressed backward is not the backward of the restored tensors";
}

TEST(CompressedAttention, GradientStaysCloseToTheUncompressedOne) {
  const Fixture f;
  const AttentionRun plain = run(f.qkv, f.dout, {});
  const AttentionRun both = run(f.qkv, f.dout, {true, true});
  const double err = relative_l2(both.dqkv, plain.dqkv);
  EXPECT_GT(err, 0.0) << "compression changed nothing: were the tensors compressed at all?";
  EXPECT_LT(err, 0.08) << "E4M3 1x16 groups should cost a few percent of the gradient, not more";
}

}  // namespace
}  // namespace coat::nn
