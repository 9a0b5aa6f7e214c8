// Causal GQA attention op on the CPU: naive forward (out and lse), F64 finite-difference backward for
// grouped (Hq=4, Hkv=2) and plain (Hq == Hkv) heads, causal masking, longer keys than queries, F32/BF16
// against F64, and argument errors.
#include <gtest/gtest.h>

#include "expect_error.h"
#include "finite_difference.h"

#include <algorithm>
#include <cmath>

#include "coat/backend/token_strided.h"
#include "coat/ops/attention.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/runtime.h"

namespace coat {
namespace {

using test::random_values;

ContextPtr cpu() {
  return ops::make_context(Device::cpu());
}

struct Dims {
  int64_t b, tq, tk, hq, hkv, dh;
  size_t q_numel() const { return static_cast<size_t>(b * tq * hq * dh); }
  size_t kv_numel() const { return static_cast<size_t>(b * tk * hkv * dh); }
  Shape q_shape() const { return {b, tq, hq, dh}; }
  Shape kv_shape() const { return {b, tk, hkv, dh}; }
};

struct Naive {
  std::vector<double> out, lse;
};

/// Straight from the definition: query t (at position tk - tq + t) sees keys 0..tk - tq + t.
Naive naive_attention(const Dims& d, const std::vector<double>& q, const std::vector<double>& k,
                      const std::vector<double>& v, double scale) {
  Naive r;
  r.out.assign(d.q_numel(), 0.0);
  r.lse.assign(static_cast<size_t>(d.b * d.hq * d.tq), 0.0);
  for (int64_t b = 0; b < d.b; ++b)
    for (int64_t h = 0; h < d.hq; ++h) {
      const int64_t kvh = h / (d.hq / d.hkv);
      for (int64_t i = 0; i < d.tq; ++i) {
        const int64_t visible = d.tk - d.tq + i + 1;
        std::vector<double> s(static_cast<size_t>(visible));
        for (int64_t j = 0; j < visible; ++j) {
          double dotp = 0.0;
          for (int64_t e = 0; e < d.dh; ++e)
            dotp += q[((b * d.tq + i) * d.hq + h) * d.dh + e] * k[((b * d.tk + j) * d.hkv + kvh) * d.dh + e];
          s[j] = dotp * scale;
        }
        const double m = *std::max_element(s.begin(), s.end());
        double sum = 0.0;
        for (double x : s) sum += std::exp(x - m);
        const double lse = m + std::log(sum);
        r.lse[(b * d.hq + h) * d.tq + i] = lse;
        for (int64_t j = 0; j < visible; ++j)
          for (int64_t e = 0; e < d.dh; ++e)
            r.out[((b * d.tq + i) * d.hq + h) * d.dh + e] +=
                std::exp(s[j] - lse) * v[((b * d.tk + j) * d.hkv + kvh) * d.dh + e];
      }
    }
  return r;
}

struct Inputs {
  std::vector<double> q, k, v;
};

Inputs make_inputs(const Dims& d, uint32_t seed) {
  return {random_values(d.q_numel(), seed), random_values(d.kv_numel(), seed + 1),
          random_values(d.kv_numel(), seed + 2)};
}

ops::AttentionForward run_forward(const ContextPtr& ctx, const Dims& d, const Inputs& in, DType dt,
                                  double scale) {
  return ops::attention_forward(ops::from_vector(ctx, d.q_shape(), dt, in.q),
                                ops::from_vector(ctx, d.kv_shape(), dt, in.k),
                                ops::from_vector(ctx, d.kv_shape(), dt, in.v), scale);
}

void check_forward(const Dims& d, uint32_t seed) {
  auto ctx = cpu();
  const double scale = 1.0 / std::sqrt(static_cast<double>(d.dh));
  const Inputs in = make_inputs(d, seed);
  const ops::AttentionForward f = run_forward(ctx, d, in, DType::F64, scale);
  const Naive ref = naive_attention(d, in.q, in.k, in.v, scale);
  EXPECT_EQ(f.out.shape(), d.q_shape());
  EXPECT_EQ(f.lse.shape(), Shape({d.b, d.hq, d.tq}));
  EXPECT_EQ(f.lse.dtype(), DType::F64);
  test::expect_close(ops::to_double_vector(f.out), ref.out, 1e-12, 1e-13, "attention out");
  test::expect_close(ops::to_double_vector(f.lse), ref.lse, 1e-13, 1e-13, "attention lse");
}

TEST(AttentionOps, ForwardMatchesNaiveGrouped) {
  check_forward({2, 6, 6, 4, 2, 8}, 1);
}
TEST(AttentionOps, ForwardMatchesNaiveEqualHeads) {
  check_forward({2, 6, 6, 3, 3, 8}, 4);
}
TEST(AttentionOps, ForwardMatchesNaiveSingleKvHead) {
  check_forward({1, 9, 9, 4, 1, 4}, 7);
}
TEST(AttentionOps, ForwardMatchesNaiveLongerKeys) {
  check_forward({2, 3, 7, 4, 2, 8}, 10);
}

/// dq, dk, dv against central differences of L = sum(proj * out) over all of q, k and v (F64).
void check_backward(const Dims& d, uint32_t seed) {
  auto ctx = cpu();
  const double scale = 0.7;
  const Inputs in = make_inputs(d, seed);
  const auto proj = random_values(d.q_numel(), seed + 10);
  const std::vector<size_t> sizes{d.q_numel(), d.kv_numel(), d.kv_numel()};
  auto loss = [&](const std::vector<double>& p) {
    const auto parts = test::split(p, sizes);
    return test::dot(proj, ops::to_double_vector(
                               run_forward(ctx, d, {parts[0], parts[1], parts[2]}, DType::F64, scale).out));
  };
  const auto numeric = test::split(test::central_difference(loss, test::concat({in.q, in.k, in.v})), sizes);

  const Tensor q = ops::from_vector(ctx, d.q_shape(), DType::F64, in.q);
  const Tensor k = ops::from_vector(ctx, d.kv_shape(), DType::F64, in.k);
  const Tensor v = ops::from_vector(ctx, d.kv_shape(), DType::F64, in.v);
  const ops::AttentionForward f = ops::attention_forward(q, k, v, scale);
  const ops::AttentionGrads g = ops::attention_backward(ops::from_vector(ctx, d.q_shape(), DType::F64, proj),
                                                        q, k, v, f.out, f.lse, scale);
  EXPECT_EQ(g.dq.shape(), d.q_shape());
  EXPECT_EQ(g.dk.shape(), d.kv_shape());
  EXPECT_EQ(g.dv.shape(), d.kv_shape());
  test::expect_close_normwise(ops::to_double_vector(g.dq), numeric[0], 1e-6, "attention dq");
  test::expect_close_normwise(ops::to_double_vector(g.dk), numeric[1], 1e-6, "attention dk");
  test::expect_close_normwise(ops::to_double_vector(g.dv), numeric[2], 1e-6, "attention dv");
}

TEST(AttentionOps, BackwardMatchesFiniteDifferencesGrouped) {
  check_backward({2, 5, 5, 4, 2, 4}, 20);
}
TEST(AttentionOps, BackwardMatchesFiniteDifferencesEqualHeads) {
  check_backward({2, 5, 5, 2, 2, 4}, 30);
}
TEST(AttentionOps, BackwardMatchesFiniteDifferencesLongerKeys) {
  check_backward({1, 3, 6, 4, 2, 4}, 40);
}

TEST(AttentionOps, CausalMaskHidesFutureKeys) {
  auto ctx = cpu();
  const Dims d{2, 8, 8, 4, 2, 8};
  Inputs in = make_inputs(d, 50);
  const ops::AttentionForward before = run_forward(ctx, d, in, DType::F32, 0.35);
  const int64_t changed = 5;  // change key and value at position 5
  for (int64_t b = 0; b < d.b; ++b)
    for (int64_t h = 0; h < d.hkv; ++h)
      for (int64_t e = 0; e < d.dh; ++e) {
        in.k[((b * d.tk + changed) * d.hkv + h) * d.dh + e] += 3.0;
        in.v[((b * d.tk + changed) * d.hkv + h) * d.dh + e] -= 2.0;
      }
  const ops::AttentionForward after = run_forward(ctx, d, in, DType::F32, 0.35);
  const auto o0 = ops::to_double_vector(before.out), o1 = ops::to_double_vector(after.out);
  for (int64_t b = 0; b < d.b; ++b)
    for (int64_t t = 0; t < d.tq; ++t)
      for (int64_t h = 0; h < d.hq; ++h) {
        bool same = true;
        for (int64_t e = 0; e < d.dh; ++e) {
          const size_t i = static_cast<size_t>(((b * d.tq + t) * d.hq + h) * d.dh + e);
          same = same && o0[i] == o1[i];
        }
        if (t < changed) {
          EXPECT_TRUE(same) << "output at position " << t << " changed with a later key";
        } else {
          EXPECT_FALSE(same) << "output at position " << t << " ignores key " << changed;
        }
      }
}

TEST(AttentionOps, FirstPositionCopiesItsValue) {
  auto ctx = cpu();
  const Dims d{1, 4, 4, 2, 1, 4};
  const Inputs in = make_inputs(d, 60);
  const ops::AttentionForward f = run_forward(ctx, d, in, DType::F64, 0.5);
  const auto out = ops::to_double_vector(f.out);
  for (int64_t h = 0; h < d.hq; ++h)
    for (int64_t e = 0; e < d.dh; ++e) EXPECT_DOUBLE_EQ(out[h * d.dh + e], in.v[e]);
}

TEST(AttentionOps, LongerKeysEqualTheTailOfTheFullSequence) {
  auto ctx = cpu();
  const Dims d{2, 7, 7, 4, 2, 8};
  const Inputs in = make_inputs(d, 70);
  const Tensor q = ops::from_vector(ctx, d.q_shape(), DType::F64, in.q);
  const Tensor k = ops::from_vector(ctx, d.kv_shape(), DType::F64, in.k);
  const Tensor v = ops::from_vector(ctx, d.kv_shape(), DType::F64, in.v);
  const ops::AttentionForward full = ops::attention_forward(q, k, v, 0.3);
  const ops::AttentionForward tail = ops::attention_forward(q.slice(1, 4, 7), k, v, 0.3);  // a strided view
  test::expect_close(ops::to_double_vector(tail.out), ops::to_double_vector(full.out.slice(1, 4, 7)), 1e-14,
                     1e-15, "tail out");
}

// F32 and BF16 against F64 on the same rounded inputs. F32: rtol 1e-5, atol 1e-6. BF16 forward: one
// rounding of the output (2^-9 relative) after float arithmetic: rtol 2^-8, atol 1e-3.
// The backward reads the saved out, which is rounded to bf16: its 2^-9 error enters the row term
// sum(dout * out) and so every gradient of the row. The BF16 gradients are therefore checked twice:
// against the F64 backward given the same saved out and lse (the kernel's own arithmetic: rtol 2^-7,
// atol 2e-3), and against the exact F64 gradients norm-wise (max error <= 1.5% of the largest gradient; 0.5%
// seen).
TEST(AttentionOps, LowPrecisionMatchesF64) {
  auto ctx = cpu();
  const Dims d{2, 32, 32, 4, 2, 16};
  const double scale = 0.25;
  const Inputs in = make_inputs(d, 80);
  const auto dout = random_values(d.q_numel(), 83);
  for (DType dt : {DType::F32, DType::BF16}) {
    const Tensor q = ops::from_vector(ctx, d.q_shape(), dt, in.q);
    const Tensor k = ops::from_vector(ctx, d.kv_shape(), dt, in.k);
    const Tensor v = ops::from_vector(ctx, d.kv_shape(), dt, in.v);
    const Tensor dy = ops::from_vector(ctx, d.q_shape(), dt, dout);
    const Tensor q64 = ops::cast(q, DType::F64), k64 = ops::cast(k, DType::F64),
                 v64 = ops::cast(v, DType::F64);
    const Tensor dy64 = ops::cast(dy, DType::F64);
    const ops::AttentionForward f = ops::attention_forward(q, k, v, scale);
    const ops::AttentionForward f64 = ops::attention_forward(q64, k64, v64, scale);
    EXPECT_EQ(f.out.dtype(), dt);
    EXPECT_EQ(f.lse.dtype(), DType::F32);
    const std::string name(dtype_name(dt));
    const bool bf16 = dt == DType::BF16;
    const double rtol = bf16 ? 1.0 / 256 : 1e-5, atol = bf16 ? 1e-3 : 1e-6;
    test::expect_close(ops::to_double_vector(f.out), ops::to_double_vector(f64.out), rtol, atol,
                       name + " out");
    test::expect_close(ops::to_double_vector(f.lse), ops::to_double_vector(f64.lse), 1e-6, 1e-6,
                       name + " lse");

    const ops::AttentionGrads g = ops::attention_backward(dy, q, k, v, f.out, f.lse, scale);
    const ops::AttentionGrads same_saved = ops::attention_backward(
        dy64, q64, k64, v64, ops::cast(f.out, DType::F64), ops::cast(f.lse, DType::F64), scale);
    const ops::AttentionGrads exact = ops::attention_backward(dy64, q64, k64, v64, f64.out, f64.lse, scale);
    const double grtol = bf16 ? 1.0 / 128 : 1e-5, gatol = bf16 ? 2e-3 : 1e-6;
    const std::vector<std::pair<const Tensor*, const Tensor*>> pairs{
        {&g.dq, &same_saved.dq}, {&g.dk, &same_saved.dk}, {&g.dv, &same_saved.dv}};
    const char* names[] = {" dq", " dk", " dv"};
    const Tensor* exact_grads[] = {&exact.dq, &exact.dk, &exact.dv};
    for (size_t i = 0; i < pairs.size(); ++i) {
      EXPECT_EQ(pairs[i].first->dtype(), dt);
      const auto got = ops::to_double_vector(*pairs[i].first);
      test::expect_close(got, ops::to_double_vector(*pairs[i].second), grtol, gatol, name + names[i]);
      test::expect_close_normwise(got, ops::to_double_vector(*exact_grads[i]), bf16 ? 0.015 : 1e-5,
                                  name + names[i] + " vs exact");
    }
  }
}

// Big enough to run on several threads (when the machine has them): the split over (batch, kv head) must
// not change any bit, so the whole call equals one call per (batch, kv head), each a single unit of work.
TEST(AttentionOps, ThreadedResultEqualsPerUnitResult) {
  auto ctx = cpu();
  const Dims d{2, 128, 128, 4, 2, 32};
  const Inputs in = make_inputs(d, 90);
  const Tensor q = ops::from_vector(ctx, d.q_shape(), DType::F32, in.q);
  const Tensor k = ops::from_vector(ctx, d.kv_shape(), DType::F32, in.k);
  const Tensor v = ops::from_vector(ctx, d.kv_shape(), DType::F32, in.v);
  const Tensor dout = ops::from_vector(ctx, d.q_shape(), DType::F32, random_values(d.q_numel(), 93));
  const ops::AttentionForward f = ops::attention_forward(q, k, v, 0.2);
  const ops::AttentionGrads g = ops::attention_backward(dout, q, k, v, f.out, f.lse, 0.2);
  const int64_t group = d.hq / d.hkv;
  for (int64_t b = 0; b < d.b; ++b)
    for (int64_t h = 0; h < d.hkv; ++h) {
      auto unit_q = [&](const Tensor& t) {
        return t.slice(0, b, b + 1).slice(2, h * group, (h + 1) * group);
      };
      auto unit_kv = [&](const Tensor& t) { return t.slice(0, b, b + 1).slice(2, h, h + 1); };
      const ops::AttentionForward fu = ops::attention_forward(unit_q(q), unit_kv(k), unit_kv(v), 0.2);
      EXPECT_EQ(ops::to_bytes(fu.out), ops::to_bytes(unit_q(f.out)));
      EXPECT_EQ(ops::to_bytes(fu.lse),
                ops::to_bytes(f.lse.slice(0, b, b + 1).slice(1, h * group, (h + 1) * group)));
      const ops::AttentionGrads gu =
          ops::attention_backward(unit_q(dout), unit_q(q), unit_kv(k), unit_kv(v), fu.out, fu.lse, 0.2);
      EXPECT_EQ(ops::to_bytes(gu.dq), ops::to_bytes(unit_q(g.dq)));
      EXPECT_EQ(ops::to_bytes(gu.dk), ops::to_bytes(unit_kv(g.dk)));
      EXPECT_EQ(ops::to_bytes(gu.dv), ops::to_bytes(unit_kv(g.dv)));
    }
}

// q, k and v as strided views of one packed projection [B, T, Hq + 2 Hkv, Dh] (token stride
// (Hq + 2 Hkv) * Dh): the same bits as on contiguous copies; the backward written into views of one packed
// gradient buffer gives the same bits as the separate gradients, and leaves nothing unwritten.
TEST(AttentionOps, PackedViewsEqualContiguousCopies) {
  auto ctx = cpu();
  const int64_t b = 2, t = 9, hq = 4, hkv = 2, dh = 8, heads = hq + 2 * hkv;
  for (DType dt : {DType::F64, DType::F32, DType::BF16}) {
    const Tensor qkv = ops::from_vector(ctx, {b, t, heads, dh}, dt, random_values(b * t * heads * dh, 110));
    const Tensor q = qkv.slice(2, 0, hq), k = qkv.slice(2, hq, hq + hkv), v = qkv.slice(2, hq + hkv, heads);
    ASSERT_FALSE(q.is_contiguous());
    const Tensor cq = ops::contiguous(q), ck = ops::contiguous(k), cv = ops::contiguous(v);
    const ops::AttentionForward f = ops::attention_forward(q, k, v, 0.3);
    const ops::AttentionForward ref = ops::attention_forward(cq, ck, cv, 0.3);
    const std::string name(dtype_name(dt));
    EXPECT_EQ(ops::to_bytes(f.out), ops::to_bytes(ref.out)) << name;
    EXPECT_EQ(ops::to_bytes(f.lse), ops::to_bytes(ref.lse)) << name;

    // dout itself a view of a wider buffer.
    const Tensor wide =
        ops::from_vector(ctx, {b, t, hq + 1, dh}, dt, random_values(b * t * (hq + 1) * dh, 111));
    const Tensor dout = wide.slice(2, 1, hq + 1);
    const ops::AttentionGrads g =
        ops::attention_backward(ops::contiguous(dout), cq, ck, cv, ref.out, ref.lse, 0.3);
    Tensor dqkv = ops::full(ctx, {b, t, heads, dh}, 7.0, dt);  // no stale value may survive
    Tensor dq = dqkv.slice(2, 0, hq), dk = dqkv.slice(2, hq, hq + hkv), dv = dqkv.slice(2, hq + hkv, heads);
    ops::attention_backward(dout, q, k, v, f.out, f.lse, 0.3, dq, dk, dv);
    EXPECT_EQ(ops::to_bytes(dq), ops::to_bytes(g.dq)) << name;
    EXPECT_EQ(ops::to_bytes(dk), ops::to_bytes(g.dk)) << name;
    EXPECT_EQ(ops::to_bytes(dv), ops::to_bytes(g.dv)) << name;
    // Contiguous output arguments are written directly.
    Tensor dq2 = ops::zeros(ctx, q.shape(), dt), dk2 = ops::zeros(ctx, k.shape(), dt),
           dv2 = ops::zeros(ctx, v.shape(), dt);
    const void* before = dq2.data_ptr();
    ops::attention_backward(dout, cq, ck, cv, ref.out, ref.lse, 0.3, dq2, dk2, dv2);
    EXPECT_EQ(dq2.data_ptr(), before);
    EXPECT_EQ(ops::to_bytes(dq2), ops::to_bytes(g.dq)) << name;
    EXPECT_EQ(ops::to_bytes(dk2), ops::to_bytes(g.dk)) << name;
    EXPECT_EQ(ops::to_bytes(dv2), ops::to_bytes(g.dv)) << name;
  }
}

// The layout the CUDA attention takes without copies (coat/backend/token_strided.h).
TEST(AttentionOps, TokenStrideOfViews) {
  auto ctx = cpu();
  const Tensor packed = ops::zeros(ctx, {2, 5, 8, 4}, DType::F32);
  EXPECT_EQ(token_stride_of(packed), 32);                  // contiguous
  EXPECT_EQ(token_stride_of(packed.slice(2, 0, 4)), 32);   // q heads
  EXPECT_EQ(token_stride_of(packed.slice(2, 6, 8)), 32);   // v heads
  EXPECT_EQ(token_stride_of(packed.slice(1, 0, 1)), 160);  // one position: the batch stride
  EXPECT_EQ(token_stride_of(packed.slice(1, 1, 3)), -1);   // batch stride 160 != 2 x 32
  EXPECT_EQ(token_stride_of(packed.slice(3, 0, 2)), -1);   // head stride 4 != Dh 2
  EXPECT_EQ(token_stride_of(packed.transpose(1, 2)), -1);  // [B, H, T, Dh]
  EXPECT_EQ(token_stride_of(packed.reshape({10, 8, 4})), -1);
}

TEST(AttentionOps, ErrorsNameTheProblem) {
  auto ctx = cpu();
  const Dims d{1, 4, 4, 4, 2, 8};
  const Inputs in = make_inputs(d, 100);
  const Tensor q = ops::from_vector(ctx, d.q_shape(), DType::F32, in.q);
  const Tensor k = ops::from_vector(ctx, d.kv_shape(), DType::F32, in.k);
  const Tensor v = ops::from_vector(ctx, d.kv_shape(), DType::F32, in.v);
  test::expect_error_containing([&] { ops::attention_forward(q.slice(2, 0, 3), k, v, 1.0); },
                                "[attention_forward] query heads 3 are not a multiple of kv heads 2");
  test::expect_error_containing([&] { ops::attention_forward(q, k, v.slice(3, 0, 4), 1.0); },
                                "v has shape (1,4,2,4); expected (1,4,2,8)");
  test::expect_error_containing([&] { ops::attention_forward(q, k.slice(1, 0, 3), v.slice(1, 0, 3), 1.0); },
                                "has fewer positions than q");
  test::expect_error_containing([&] { ops::attention_forward(q, ops::cast(k, DType::BF16), v, 1.0); },
                                "k has dtype bf16 but q has f32");
  test::expect_error_containing(
      [&] {
        ops::attention_forward(q.reshape({4, 4, 8}), k, v, 1.0);
      },
      "q has shape (4,4,8); expected [B, T, Hq, Dh]");
  const ops::AttentionForward f = ops::attention_forward(q, k, v, 1.0);
  test::expect_error_containing(
      [&] { ops::attention_backward(q, q, k, v, f.out, f.lse.slice(2, 0, 3), 1.0); },
      "[attention_backward] lse has shape (1,4,3); expected (1,4,4)");
  test::expect_error_containing(
      [&] { ops::attention_backward(q, q, k, v, f.out, ops::cast(f.lse, DType::F64), 1.0); },
      "lse has dtype f64; expected f32");
  test::expect_error_containing([&] { ops::attention_backward(k, q, k, v, f.out, f.lse, 1.0); },
                                "dout has shape (1,4,2,8); expected (1,4,4,8)");
  Tensor dq = ops::zeros(ctx, q.shape(), DType::F32), dk = ops::zeros(ctx, k.shape(), DType::F32);
  Tensor dv = ops::zeros(ctx, q.shape(), DType::F32);
  test::expect_error_containing([&] { ops::attention_backward(q, q, k, v, f.out, f.lse, 1.0, dq, dk, dv); },
                                "[attention_backward] dv has shape (1,4,4,8); expected (1,4,2,8)");
  Tensor dk16 = ops::zeros(ctx, k.shape(), DType::BF16);
  test::expect_error_containing([&] { ops::attention_backward(q, q, k, v, f.out, f.lse, 1.0, dq, dk16, dk); },
                                "dk has dtype bf16 but q has f32");
}

}  // namespace
}  // namespace coat
