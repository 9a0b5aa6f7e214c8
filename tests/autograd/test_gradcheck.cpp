// Autograd-lite: the tape's bookkeeping, and every layer-level function's backward against central finite
// differences in F64 on the CPU. Loss L = sum(w * y) with random w, so one backward checks the whole
// vector-Jacobian product. Tolerance: |analytic - numeric| <= 1e-6 * (1 + |numeric|) with step 1e-6
// (central differences in F64 are accurate to ~1e-9 here).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>

#include "coat/autograd/tape.h"
#include "coat/models/transformer.h"
#include "coat/nn/activation.h"
#include "coat/nn/attention.h"
#include "coat/nn/embedding.h"
#include "coat/nn/linear.h"
#include "coat/nn/loss.h"
#include "coat/nn/norm.h"
#include "coat/nn/packed_attention.h"
#include "coat/nn/residual.h"
#include "coat/nn/rope.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/runtime.h"

namespace coat {
namespace {

using autograd::Tape;
using autograd::Var;

constexpr double kStep = 1e-6;
constexpr double kTol = 1e-6;

ContextPtr cpu() { return ops::make_context(Device::cpu()); }

Tensor random_tensor(const ContextPtr& ctx, const Shape& shape, std::mt19937& rng, double scale = 1.0) {
  std::normal_distribution<double> d(0.0, scale);
  std::vector<double> v(static_cast<size_t>(shape_numel(shape)));
  for (double& x : v) {
    x = d(rng);
    if (std::abs(x) < 1e-3) x = 1e-3;  // non-zero inputs
  }
  return ops::from_vector(ctx, shape, DType::F64, v);
}

double* f64(Tensor& t) { return static_cast<double*>(t.data_ptr()); }

double dot(const Tensor& y, const Tensor& w) {
  const std::vector<double> a = ops::to_double_vector(y), b = ops::to_double_vector(w);
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

nn::Parameter make_param(const ContextPtr& ctx, const std::string& name, const Shape& shape, std::mt19937& rng,
                         double scale = 1.0) {
  nn::Parameter p;
  p.name = name;
  p.value = random_tensor(ctx, shape, rng, scale);
  p.master = p.value;
  p.grad = ops::zeros(ctx, shape, DType::F64);
  return p;
}

/// Checks d(loss)/d(t[i]) for every element of t against `analytic`.
void expect_matches_fd(Tensor t, const Tensor& analytic, const std::function<double()>& loss, const std::string& what) {
  ASSERT_TRUE(analytic.defined()) << what << ": no gradient";
  ASSERT_EQ(analytic.shape(), t.shape()) << what;
  const std::vector<double> a = ops::to_double_vector(analytic);
  double* x = f64(t);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double keep = x[i];
    x[i] = keep + kStep;
    const double up = loss();
    x[i] = keep - kStep;
    const double down = loss();
    x[i] = keep;
    const double numeric = (up - down) / (2 * kStep);
    ASSERT_NEAR(a[static_cast<size_t>(i)], numeric, kTol * (1 + std::abs(numeric))) << what << " element " << i;
  }
}

/// Runs f on a fresh tape with leaves for `inputs`; checks every input's and parameter's gradient.
void check_function(std::vector<Tensor> inputs, std::vector<nn::Parameter*> params,
                    const std::function<Var(Tape&, std::vector<Var>&)>& f, const std::string& name, std::mt19937& rng) {
  // The projection weights, shaped like the output.
  Tape probe(false);
  std::vector<Var> probe_vars;
  for (Tensor& t : inputs) probe_vars.push_back(probe.leaf(t));
  const Tensor w = random_tensor(cpu(), f(probe, probe_vars).shape(), rng);
  auto loss = [&] {
    Tape t(false);
    std::vector<Var> vars;
    for (Tensor& in : inputs) vars.push_back(t.leaf(in));
    return dot(f(t, vars).value, w);
  };
  for (nn::Parameter* p : params) ops::fill_(p->grad, 0.0);
  Tape tape;
  std::vector<Var> vars;
  for (Tensor& in : inputs) vars.push_back(tape.leaf(in, /*requires_grad=*/true));
  Var y = f(tape, vars);
  tape.backward(y, w);
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].dtype() != DType::F64) continue;  // integer inputs (ids)
    expect_matches_fd(inputs[i], tape.grad(vars[i]), loss, name + " input " + std::to_string(i));
  }
  for (nn::Parameter* p : params) expect_matches_fd(p->value, p->grad, loss, name + " " + p->name);
}

TEST(Tape, GradientsOfAValueUsedTwiceAdd) {
  auto ctx = cpu();
  std::mt19937 rng(1);
  Tensor x = random_tensor(ctx, {3, 4}, rng);
  Tape tape;
  Var v = tape.leaf(x, true);
  Var y = nn::add(tape, v, v);
  Tensor w = random_tensor(ctx, {3, 4}, rng);
  tape.backward(y, w);
  const std::vector<double> g = ops::to_double_vector(tape.grad(v)), ww = ops::to_double_vector(w);
  for (size_t i = 0; i < g.size(); ++i) EXPECT_EQ(g[i], 2 * ww[i]);
}

TEST(Tape, HooksRunAfterTheLaterNodesAndConstantsKeepNothing) {
  auto ctx = cpu();
  std::mt19937 rng(2);
  Tape tape;
  std::vector<std::string> order;
  Var x = tape.leaf(random_tensor(ctx, {2, 3}, rng), true);
  tape.hook("block 0", [&] { order.push_back("hook 0"); });
  Var y = tape.record("first", x.value, {x}, {x.value}, [&](const Tensor& g, const std::vector<Tensor>&) -> autograd::Grads {
    order.push_back("first");
    return {g};
  });
  tape.hook("block 1", [&] { order.push_back("hook 1"); });
  Var z = tape.record("second", y.value, {y}, {}, [&](const Tensor& g, const std::vector<Tensor>&) -> autograd::Grads {
    order.push_back("second");
    return {g};
  });
  EXPECT_EQ(tape.saved_bytes("first"), x.value.storage()->bytes());
  EXPECT_EQ(tape.saved_bytes("second"), 0u);
  // A function of constants only records nothing.
  Var c = tape.leaf(random_tensor(ctx, {2, 3}, rng));
  Var cc = nn::add(tape, c, c);
  EXPECT_FALSE(cc.requires_grad());
  EXPECT_EQ(tape.size(), 4u);
  tape.backward(z, ops::full(ctx, {2, 3}, 1.0, DType::F64));
  EXPECT_EQ(order, (std::vector<std::string>{"second", "hook 1", "first", "hook 0"}));
  EXPECT_EQ(tape.size(), 0u);
}

TEST(GradCheck, Linear) {
  auto ctx = cpu();
  std::mt19937 rng(3);
  nn::Parameter w = make_param(ctx, "w", {5, 4}, rng);
  check_function({random_tensor(ctx, {2, 3, 4}, rng)}, {&w},
                 [&](Tape& t, std::vector<Var>& v) { return nn::linear(t, v[0], w); }, "linear", rng);
}

TEST(GradCheck, Embedding) {
  auto ctx = cpu();
  std::mt19937 rng(4);
  nn::Parameter table = make_param(ctx, "table", {7, 3}, rng);
  const Tensor ids = ops::from_vector(ctx, {2, 3}, DType::I32, std::vector<double>{1, 6, 1, 0, 3, 1});
  check_function({}, {&table}, [&](Tape& t, std::vector<Var>&) { return nn::embedding(t, table, ids); }, "embedding", rng);
}

TEST(GradCheck, RmsNormWithAndWithoutWeight) {
  auto ctx = cpu();
  std::mt19937 rng(5);
  nn::Parameter g = make_param(ctx, "g", {6}, rng);
  check_function({random_tensor(ctx, {4, 6}, rng)}, {&g},
                 [&](Tape& t, std::vector<Var>& v) { return nn::rms_norm(t, v[0], &g, 1e-5); }, "rms_norm", rng);
  check_function({random_tensor(ctx, {2, 2, 6}, rng)}, {},
                 [&](Tape& t, std::vector<Var>& v) { return nn::rms_norm(t, v[0], nullptr, 1e-5); }, "rms_norm (no weight)",
                 rng);
}

TEST(GradCheck, LayerNormWithoutAffine) {
  auto ctx = cpu();
  std::mt19937 rng(6);
  check_function({random_tensor(ctx, {5, 8}, rng)}, {},
                 [&](Tape& t, std::vector<Var>& v) { return nn::layer_norm(t, v[0], 1e-5); }, "layer_norm", rng);
}

TEST(GradCheck, Rope) {
  auto ctx = cpu();
  std::mt19937 rng(7);
  check_function({random_tensor(ctx, {2, 5, 3, 8}, rng)}, {},
                 [&](Tape& t, std::vector<Var>& v) { return nn::rope(t, v[0], 500.0); }, "rope", rng);
}

TEST(GradCheck, AttentionWithGroupedKvHeads) {
  auto ctx = cpu();
  std::mt19937 rng(8);
  for (int64_t hkv : {int64_t{2}, int64_t{4}}) {
    check_function({random_tensor(ctx, {2, 5, 4, 6}, rng), random_tensor(ctx, {2, 5, hkv, 6}, rng),
                    random_tensor(ctx, {2, 5, hkv, 6}, rng)},
                   {}, [&](Tape& t, std::vector<Var>& v) { return nn::attention(t, v[0], v[1], v[2], 0.4); },
                   "attention hkv " + std::to_string(hkv), rng);
  }
}

TEST(GradCheck, SwiGlu) {
  auto ctx = cpu();
  std::mt19937 rng(9);
  check_function({random_tensor(ctx, {3, 7}, rng, 2.0), random_tensor(ctx, {3, 7}, rng)}, {},
                 [&](Tape& t, std::vector<Var>& v) { return nn::swiglu(t, v[0], v[1]); }, "swiglu", rng);
}

/// A fresh copy of v on the tape (v + 0): packed_attention rotates its input in place, and the checks
/// evaluate the function many times on the same leaves.
Var fresh(Tape& t, const Var& v) {
  return nn::add(t, v, t.leaf(ops::zeros(v.value.context(), v.shape(), v.value.dtype())));
}

TEST(GradCheck, PackedAttention) {
  auto ctx = cpu();
  std::mt19937 rng(12);
  const int64_t hq = 4, dh = 6;
  for (int64_t hkv : {int64_t{1}, int64_t{2}}) {
    check_function(
        {random_tensor(ctx, {2, 5, (hq + 2 * hkv) * dh}, rng)}, {},
        [&](Tape& t, std::vector<Var>& v) {
          return nn::packed_attention(t, fresh(t, v[0]), hq, hkv, dh, 500.0, 0.4);
        },
        "packed_attention hkv " + std::to_string(hkv), rng);
  }
}

// The packed node computes what rope(q), rope(k), attention(q, k, v) compute on the split projection, to
// the bit (CPU), forward and backward.
TEST(GradCheck, PackedAttentionEqualsRopeAndAttention) {
  auto ctx = cpu();
  std::mt19937 rng(13);
  const int64_t b = 2, t = 7, hq = 4, hkv = 2, dh = 8, heads = hq + 2 * hkv;
  const Tensor qkv = random_tensor(ctx, {b, t, heads * dh}, rng);
  const Tensor w = random_tensor(ctx, {b, t, hq * dh}, rng);
  const std::vector<uint8_t> input_bytes = ops::to_bytes(qkv);
  Tape packed_tape;
  Var x1 = packed_tape.leaf(qkv, true);
  Var y1 = nn::packed_attention(packed_tape, fresh(packed_tape, x1), hq, hkv, dh, 1e4, 0.3);
  Tape ref_tape;
  Var x2 = ref_tape.leaf(qkv, true);
  Var x4 = nn::reshape(ref_tape, x2, {b, t, heads, dh});
  auto heads_of = [&](int64_t from, int64_t to) {
    // A slice as a tape function: forward copies the heads, backward scatters into zeros.
    return ref_tape.record("slice", ops::contiguous(x4.value.slice(2, from, to)), {x4}, {},
                           [=](const Tensor& dy, const std::vector<Tensor>&) -> autograd::Grads {
                             Tensor g = ops::zeros(dy.context(), {b, t, heads, dh}, dy.dtype());
                             Tensor part = g.slice(2, from, to);
                             ops::copy_(part, dy);
                             return {g};
                           });
  };
  Var q = nn::rope(ref_tape, heads_of(0, hq), 1e4);
  Var k = nn::rope(ref_tape, heads_of(hq, hq + hkv), 1e4);
  Var y2 =
      nn::reshape(ref_tape, nn::attention(ref_tape, q, k, heads_of(hq + hkv, heads), 0.3), {b, t, hq * dh});
  EXPECT_EQ(ops::to_bytes(y1.value), ops::to_bytes(y2.value));
  EXPECT_EQ(ops::to_bytes(qkv), input_bytes) << "the input leaf was modified";
  packed_tape.backward(y1, w);
  ref_tape.backward(y2, w);
  EXPECT_EQ(ops::to_bytes(packed_tape.grad(x1)), ops::to_bytes(ref_tape.grad(x2)));
}

TEST(GradCheck, SwigluPacked) {
  auto ctx = cpu();
  std::mt19937 rng(14);
  check_function(
      {random_tensor(ctx, {3, 2, 10}, rng, 2.0)}, {},
      [&](Tape& t, std::vector<Var>& v) { return nn::swiglu_packed(t, v[0]); }, "swiglu_packed", rng);
}

TEST(GradCheck, ReshapeAndAdd) {
  auto ctx = cpu();
  std::mt19937 rng(10);
  check_function({random_tensor(ctx, {2, 6}, rng), random_tensor(ctx, {3, 4}, rng)}, {},
                 [&](Tape& t, std::vector<Var>& v) { return nn::add(t, nn::reshape(t, v[0], {3, 4}), v[1]); },
                 "reshape+add", rng);
}

TEST(GradCheck, CrossEntropyWithIgnoredRows) {
  auto ctx = cpu();
  std::mt19937 rng(11);
  const Tensor targets = ops::from_vector(ctx, {2, 3}, DType::I32, std::vector<double>{4, -100, 0, 2, 2, -100});
  Tensor logits = random_tensor(ctx, {2, 3, 5}, rng);
  auto loss = [&] {
    Tape t(false);
    return nn::cross_entropy(t, t.leaf(logits), targets, -100, 0.25).read().loss_sum * 0.25;
  };
  Tape tape;
  Var x = tape.leaf(logits, true);
  nn::LossOutput out = nn::cross_entropy(tape, x, targets, -100, 0.25);
  EXPECT_EQ(out.read().count, 4);
  tape.backward(out.root, ops::full(ctx, {1}, 1.0, DType::F64));
  expect_matches_fd(logits, tape.grad(x), loss, "cross_entropy");
}

models::ModelConfig tiny_config(models::Architecture arch, bool tie) {
  models::ModelConfig c;
  c.architecture = arch;
  c.hidden_size = 8;
  c.intermediate_size = 12;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.num_key_value_heads = arch == models::Architecture::Llama ? 1 : 2;
  c.vocab_size = 11;
  c.max_position_embeddings = 16;
  c.tie_word_embeddings = tie;
  c.initializer_range = 0.5;  // large enough that every path carries gradient
  return c;
}

void check_model(models::ModelConfig config) {
  auto ctx = cpu();
  models::Transformer model(config, ctx, DType::F64, true);
  model.init(123);
  RandomGenerator norm_gen{7, 0};
  for (auto& p : model.parameters()) {
    if (p.value.dim() == 1) ops::uniform_(p.value, norm_gen, 0.5f, 1.5f);  // norm weights away from 1
  }
  const Tensor ids = ops::from_vector(ctx, {2, 5}, DType::I32, std::vector<double>{1, 4, 9, 10, 0, 3, 3, 7, 2, 5});
  const Tensor targets = ops::from_vector(ctx, {2, 5}, DType::I32, std::vector<double>{4, 9, 10, 0, 6, 3, 7, 2, 5, 8});
  const double scale = 1.0 / 10;
  auto loss = [&] {
    Tape t(false);
    return model.forward(t, ids, targets, -1, scale).read().loss_sum * scale;
  };
  model.zero_grad();
  Tape tape;
  nn::LossOutput out = model.forward(tape, ids, targets, -1, scale);
  tape.backward(out.root, ops::full(ctx, {1}, 1.0, DType::F64));
  for (auto& p : model.parameters()) {
    // Every parameter, a sample of its elements (all of the small ones).
    const std::vector<double> g = ops::to_double_vector(p.grad);
    double* x = f64(p.value);
    for (int64_t i = 0; i < p.value.numel(); i += std::max<int64_t>(1, p.value.numel() / 9)) {
      const double keep = x[i];
      x[i] = keep + kStep;
      const double up = loss();
      x[i] = keep - kStep;
      const double down = loss();
      x[i] = keep;
      const double numeric = (up - down) / (2 * kStep);
      ASSERT_NEAR(g[static_cast<size_t>(i)], numeric, kTol * (1 + std::abs(numeric))) << p.name << " element " << i;
    }
  }
}

TEST(GradCheck, LlamaModelWithGroupedKvHeadsUntied) { check_model(tiny_config(models::Architecture::Llama, false)); }
TEST(GradCheck, OlmoModelTied) { check_model(tiny_config(models::Architecture::Olmo, true)); }

}  // namespace
}  // namespace coat
