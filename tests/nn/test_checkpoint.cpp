// nn::checkpoint: one tape node that keeps only its input, bit-identical gradients to running the function
// directly, parameter gradients accumulated once, and hooks (outer and inner) firing in backward order.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "coat/nn/checkpoint.h"
#include "coat/nn/linear.h"
#include "coat/nn/norm.h"
#include "coat/nn/residual.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/matmul.h"
#include "coat/ops/runtime.h"

namespace coat::nn {
namespace {

using autograd::Tape;
using autograd::Var;

Tensor random_tensor(const ContextPtr& ctx, const Shape& shape, std::mt19937& rng) {
  std::normal_distribution<double> d(0.0, 1.0);
  std::vector<double> v(static_cast<size_t>(shape_numel(shape)));
  for (double& x : v) x = d(rng);
  return ops::from_vector(ctx, shape, DType::F32, v);
}

Parameter make_param(const ContextPtr& ctx, const std::string& name, const Shape& shape, std::mt19937& rng) {
  Parameter p;
  p.name = name;
  p.value = random_tensor(ctx, shape, rng);
  p.master = p.value;
  p.grad = ops::zeros(ctx, shape, DType::F32, MemoryCategory::Gradients);
  return p;
}

struct Net {
  Parameter w1, g, w2;
  std::vector<std::string>* order = nullptr;
  // The checkpointed part: a residual block with a hook between its two functions.
  Var inner(Tape& t, const Var& x) {
    Var a = rms_norm(t, x, &g, 1e-5);
    t.hook("inner", [this] { order->push_back("inner"); });
    return add(t, x, linear(t, a, w1));
  }
};

struct Result {
  std::vector<uint8_t> dx, dw1, dg, dw2;
  size_t saved_bytes = 0;
  size_t nodes = 0;
  std::vector<std::string> order;
};

Result run(bool recompute, uint32_t seed) {
  auto ctx = ops::make_context(Device::cpu());
  std::mt19937 rng(seed);
  Net net{make_param(ctx, "w1", {6, 6}, rng), make_param(ctx, "g", {6}, rng),
          make_param(ctx, "w2", {3, 6}, rng)};
  Result r;
  net.order = &r.order;
  const Tensor x_value = random_tensor(ctx, {2, 4, 6}, rng);
  const Tensor seed_grad = random_tensor(ctx, {2, 4, 3}, rng);
  for (int pass = 0; pass < 2; ++pass) {  // twice: the parameter gradients must sum, once per pass
    Tape tape;
    const Var x = tape.leaf(x_value, /*requires_grad=*/true);
    tape.hook("before", [&r] { r.order.push_back("before"); });
    const Var h = recompute ? checkpoint(tape, x, [&net](Tape& t, const Var& in) { return net.inner(t, in); })
                            : net.inner(tape, x);
    tape.hook("after", [&r] { r.order.push_back("after"); });
    const Var y = linear(tape, h, net.w2);
    r.saved_bytes = tape.saved_bytes();
    r.nodes = tape.size();
    tape.backward(y, seed_grad);
    r.dx = ops::to_bytes(tape.grad(x));
  }
  r.dw1 = ops::to_bytes(net.w1.grad);
  r.dg = ops::to_bytes(net.g.grad);
  r.dw2 = ops::to_bytes(net.w2.grad);
  return r;
}

TEST(Checkpoint, SameGradientsBitForBitAndHooksInBackwardOrder) {
  const Result plain = run(false, 7);
  const Result rc = run(true, 7);
  EXPECT_EQ(rc.dx, plain.dx);
  EXPECT_EQ(rc.dw1, plain.dw1);
  EXPECT_EQ(rc.dg, plain.dg);
  EXPECT_EQ(rc.dw2, plain.dw2);
  const std::vector<std::string> expected = {"after", "inner", "before", "after", "inner", "before"};
  EXPECT_EQ(plain.order, expected);
  EXPECT_EQ(rc.order, expected);
  // The checkpoint keeps its input alone ([2, 4, 6] f32), the outer linear its input ([2, 4, 6] f32); the
  // plain run also keeps the norm's rstd and output.
  EXPECT_EQ(rc.saved_bytes, 2u * 2 * 4 * 6 * 4);
  EXPECT_EQ(plain.saved_bytes, rc.saved_bytes + 2 * 4 * 4 + 2 * 4 * 6 * 4);
  EXPECT_EQ(rc.nodes, 4u);  // before, checkpoint, after, linear
}

TEST(Checkpoint, ConstantInputStillReachesTheParameters) {
  auto ctx = ops::make_context(Device::cpu());
  std::mt19937 rng(3);
  Parameter w = make_param(ctx, "w", {4, 4}, rng);
  const Tensor x = random_tensor(ctx, {3, 4}, rng);
  Tape tape;
  const Var y = checkpoint(tape, tape.leaf(x), [&w](Tape& t, const Var& in) { return linear(t, in, w); });
  ASSERT_TRUE(y.requires_grad());
  tape.backward(y, ops::full(ctx, {3, 4}, 1.0, DType::F32));
  Tensor expected = ops::zeros(ctx, {4, 4}, DType::F32);
  ops::matmul_(ops::full(ctx, {3, 4}, 1.0, DType::F32), x, expected, true, false);
  EXPECT_EQ(ops::to_bytes(w.grad), ops::to_bytes(expected));
}

TEST(Checkpoint, ForwardOnlyTapeRecordsNothing) {
  auto ctx = ops::make_context(Device::cpu());
  std::mt19937 rng(4);
  Parameter w = make_param(ctx, "w", {4, 4}, rng);
  Tape tape(/*grad_enabled=*/false);
  const Var y = checkpoint(tape, tape.leaf(random_tensor(ctx, {3, 4}, rng)),
                           [&w](Tape& t, const Var& in) { return linear(t, in, w); });
  EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(tape.size(), 0u);
}

}  // namespace
}  // namespace coat::nn
