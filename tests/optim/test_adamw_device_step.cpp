// The optimizer step's state that stays on the device: the skip flag of ops::adamw_step_quantized (a set
// flag leaves param, moments and compute copy bit-identical), ops::flag_nonfinite, and AdamW's per-buffer
// step (norm checks and updates queued without a read-back; end_step reports the first non-finite buffer).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/optimizer.h"
#include "coat/ops/quantized_moment.h"
#include "coat/ops/runtime.h"
#include "coat/optim/adamw.h"
#include "random_values.h"

namespace coat {
namespace {

using ops::MomentEncoding;
using ops::MomentSpec;
using ops::QuantizedMoment;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

ContextPtr cpu() { return ops::make_context(Device::cpu()); }

std::vector<MomentSpec> specs() {
  return {MomentSpec{}, MomentSpec{MomentEncoding::BF16, DType::E4M3, 128},
          MomentSpec{MomentEncoding::FP8, DType::E4M3, 128}, MomentSpec{MomentEncoding::FP8Expand, DType::E5M2, 100}};
}

ops::AdamWHyper hyper(int64_t step) {
  ops::AdamWHyper h;
  h.lr = 1e-3f;
  h.weight_decay = 0.1f;
  h.step = step;
  return h;
}

/// Every byte of a moment (codes and metadata), in tensors() order.
std::vector<std::vector<uint8_t>> moment_bytes(const QuantizedMoment& m) {
  std::vector<std::vector<uint8_t>> out;
  for (const auto& [suffix, t] : m.tensors()) out.push_back(ops::to_bytes(t));
  return out;
}

Tensor flag(const ContextPtr& ctx, int value) { return ops::full(ctx, {1}, value, DType::I32); }

TEST(AdamWSkipFlag, ASetFlagLeavesParamMomentsAndComputeCopyBitIdentical) {
  auto ctx = cpu();
  const int64_t n = 1000;
  for (const MomentSpec& spec : specs()) {
    const std::string what = ops::moment_spec_str(spec);
    Tensor p = test::nonzero_normal_tensor(ctx, {n}, DType::F32, 1, 0.0, 0.02);
    QuantizedMoment m = ops::make_moment(ctx, n, spec, MemoryCategory::OptimizerState);
    QuantizedMoment v = ops::make_moment(ctx, n, spec, MemoryCategory::OptimizerState);
    ops::adamw_step_quantized(p, test::nonzero_normal_tensor(ctx, {n}, DType::F32, 2, 0.0, 1e-3), m, v, hyper(1),
                              {{0, n}});  // non-zero moments first
    // Zeros, not bf16(p): a refresh from the unchanged params would show.
    Tensor compute = ops::zeros(ctx, {n}, DType::BF16);
    const Tensor g = test::nonzero_normal_tensor(ctx, {n}, DType::F32, 3, 0.0, 1e-3);
    const std::vector<uint8_t> p0 = ops::to_bytes(p), c0 = ops::to_bytes(compute);
    const auto m0 = moment_bytes(m), v0 = moment_bytes(v);
    const Tensor set = flag(ctx, 1);
    ops::adamw_step_quantized(p, g, m, v, hyper(2), {{0, n}}, &compute, &set);
    EXPECT_EQ(ops::to_bytes(p), p0) << what;
    EXPECT_EQ(ops::to_bytes(compute), c0) << what;
    EXPECT_EQ(moment_bytes(m), m0) << what;
    EXPECT_EQ(moment_bytes(v), v0) << what;

    // A clear flag: the step of a call without one, bit for bit.
    Tensor p_ref = ops::clone(p);
    QuantizedMoment m_ref = m, v_ref = v;
    for (QuantizedMoment* q : {&m_ref, &v_ref}) {
      q->codes = ops::clone(q->codes);
      if (q->scale.defined()) q->scale = ops::clone(q->scale);
      if (q->expo.defined()) q->expo = ops::clone(q->expo);
      if (q->center.defined()) q->center = ops::clone(q->center);
    }
    Tensor c_ref = ops::zeros(ctx, {n}, DType::BF16);
    ops::adamw_step_quantized(p_ref, g, m_ref, v_ref, hyper(2), {{0, n}}, &c_ref);
    const Tensor clear = flag(ctx, 0);
    ops::adamw_step_quantized(p, g, m, v, hyper(2), {{0, n}}, &compute, &clear);
    EXPECT_EQ(ops::to_bytes(p), ops::to_bytes(p_ref)) << what;
    EXPECT_NE(ops::to_bytes(p), p0) << what;
    EXPECT_EQ(ops::to_bytes(compute), ops::to_bytes(c_ref)) << what;
    EXPECT_EQ(moment_bytes(m), moment_bytes(m_ref)) << what;
    EXPECT_EQ(moment_bytes(v), moment_bytes(v_ref)) << what;
  }
}

TEST(AdamWSkipFlag, TheFlagIsCheckedLikeAnOperand) {
  auto ctx = cpu();
  Tensor p = ops::zeros(ctx, {8}, DType::F32), g = ops::zeros(ctx, {8}, DType::F32);
  QuantizedMoment m = ops::make_moment(ctx, 8, {}, MemoryCategory::OptimizerState);
  QuantizedMoment v = ops::make_moment(ctx, 8, {}, MemoryCategory::OptimizerState);
  const Tensor wrong = ops::zeros(ctx, {1}, DType::F32);
  EXPECT_THROW(ops::adamw_step_quantized(p, g, m, v, hyper(1), {}, nullptr, &wrong), InvalidArgument);
}

TEST(FlagNonfinite, SetsOnInfOrNanAndNeverClears) {
  auto ctx = cpu();
  Tensor f = flag(ctx, 0);
  ops::flag_nonfinite(f, ops::from_vector(ctx, {3}, DType::F64, std::vector<double>{1.0, -2.0, 1e300}));
  EXPECT_EQ(ops::to_double_vector(f)[0], 0.0);
  ops::flag_nonfinite(f, ops::from_vector(ctx, {0}, DType::F32, std::vector<double>{}));
  EXPECT_EQ(ops::to_double_vector(f)[0], 0.0);
  for (double bad : {kNaN, kInf, -kInf}) {
    for (DType t : {DType::F32, DType::F64}) {
      Tensor g = flag(ctx, 0);
      ops::flag_nonfinite(g, ops::from_vector(ctx, {4}, t, std::vector<double>{0.5, 1.0, bad, 2.0}));
      EXPECT_EQ(ops::to_double_vector(g)[0], 1.0) << bad << " " << dtype_name(t);
      ops::flag_nonfinite(g, ops::from_vector(ctx, {1}, t, std::vector<double>{1.0}));
      EXPECT_EQ(ops::to_double_vector(g)[0], 1.0) << "cleared";
    }
  }
  Tensor wrong = ops::zeros(ctx, {1}, DType::I64);
  EXPECT_THROW(ops::flag_nonfinite(wrong, ops::zeros(ctx, {1}, DType::F64)), InvalidArgument);
}

/// Four buffers of different lengths (one empty) with their own gradients, FP8-expanded moments.
struct UnitBuffers {
  std::vector<optim::OptimBuffer> buffers;
  explicit UnitBuffers(const ContextPtr& ctx) {
    const int64_t sizes[] = {300, 0, 517, 129};
    for (int i = 0; i < 4; ++i) {
      const int64_t n = sizes[i];
      optim::OptimBuffer b;
      b.name = "unit" + std::to_string(i);
      b.param = test::nonzero_normal_tensor(ctx, {n}, DType::F32, 10 + i, 0.0, 0.02);
      b.grad = test::nonzero_normal_tensor(ctx, {n}, DType::F32, 20 + i, 0.0, 1e-3);
      if (n > 0) b.decay.push_back({0, n});
      b.compute = ops::cast(b.param, DType::BF16);
      buffers.push_back(std::move(b));
    }
  }
};

optim::AdamWConfig fp8_config() {
  optim::AdamWConfig c;
  c.weight_decay = 0.1f;
  c.exp_avg = {MomentEncoding::FP8Expand, DType::E4M3, 128};
  c.exp_avg_sq = {MomentEncoding::FP8Expand, DType::E5M2, 128};
  return c;
}

/// Params, compute copies and every state tensor of buffer i.
std::vector<std::vector<uint8_t>> buffer_bytes(const optim::AdamW& opt, size_t i) {
  const optim::OptimBuffer& b = opt.buffers()[i];
  std::vector<std::vector<uint8_t>> out{ops::to_bytes(b.param), ops::to_bytes(b.compute)};
  for (const auto& [name, t] : opt.state_tensors()) {
    if (name.rfind(b.name + ".", 0) == 0) out.push_back(ops::to_bytes(t));
  }
  return out;
}

TEST(AdamWPerBuffer, SameBitsAsStep) {
  auto ctx = cpu();
  UnitBuffers a(ctx), b(ctx);
  optim::AdamW whole(a.buffers, fp8_config()), per(b.buffers, fp8_config());
  for (int s = 0; s < 3; ++s) {
    const optim::StepStats sa = whole.step(1e-3f);
    per.begin_step(1e-3f);
    for (size_t i : {3u, 0u, 2u, 1u}) per.update_buffer(i);
    const optim::StepStats sb = per.end_step();
    EXPECT_FALSE(sb.skipped);
    EXPECT_FALSE(sb.first_nonfinite_buffer.has_value());
    EXPECT_EQ(sa.grad_norm, sb.grad_norm);
    for (size_t i = 0; i < 4; ++i) EXPECT_EQ(buffer_bytes(whole, i), buffer_bytes(per, i)) << "buffer " << i;
  }
  EXPECT_EQ(per.step_count(), 3);
}

TEST(AdamWPerBuffer, ANonFiniteGradientStopsItsBufferAndEveryLaterOne) {
  for (double bad : {kNaN, kInf}) {
    auto ctx = cpu();
    UnitBuffers t(ctx);
    optim::AdamW opt(t.buffers, fp8_config());
    ASSERT_FALSE(opt.step(1e-3f).skipped);  // non-zero moments first
    std::vector<std::vector<std::vector<uint8_t>>> before;
    for (size_t i = 0; i < 4; ++i) before.push_back(buffer_bytes(opt, i));
    Tensor g = t.buffers[2].grad.slice(0, 100, 101);
    ops::fill_(g, bad);
    // Update order 3, 2, 0: buffer 3 keeps its update; 2 (non-finite) and 0 (after it) stay untouched.
    opt.begin_step(1e-3f);
    for (size_t i : {3u, 2u, 1u, 0u}) opt.update_buffer(i);
    const optim::StepStats st = opt.end_step();
    EXPECT_TRUE(st.skipped);
    ASSERT_TRUE(st.first_nonfinite_buffer.has_value());
    EXPECT_EQ(*st.first_nonfinite_buffer, 2u);
    EXPECT_FALSE(std::isfinite(st.grad_norm));
    EXPECT_EQ(opt.step_count(), 1);
    EXPECT_NE(buffer_bytes(opt, 3)[0], before[3][0]) << "buffer 3 was updated before the failure";
    for (size_t i : {0u, 2u}) EXPECT_EQ(buffer_bytes(opt, i), before[i]) << "buffer " << i;

    // The next step starts with a clear flag.
    ops::fill_(g, 1e-3);
    opt.begin_step(1e-3f);
    for (size_t i = 0; i < 4; ++i) opt.update_buffer(i);
    EXPECT_FALSE(opt.end_step().skipped);
    EXPECT_EQ(opt.step_count(), 2);
    EXPECT_NE(buffer_bytes(opt, 0)[0], before[0][0]);
  }
}

TEST(AdamWPerBuffer, ANonFiniteLossStopsEveryUpdate) {
  auto ctx = cpu();
  UnitBuffers t(ctx);
  optim::AdamW opt(t.buffers, fp8_config());
  ASSERT_FALSE(opt.step(1e-3f).skipped);
  std::vector<std::vector<std::vector<uint8_t>>> before;
  for (size_t i = 0; i < 4; ++i) before.push_back(buffer_bytes(opt, i));
  opt.begin_step(1e-3f);
  opt.skip_if_nonfinite(ops::from_vector(ctx, {1}, DType::F64, std::vector<double>{12.5}));  // finite: no effect
  opt.skip_if_nonfinite(ops::from_vector(ctx, {1}, DType::F64, std::vector<double>{kNaN}));
  for (size_t i = 0; i < 4; ++i) opt.update_buffer(i);
  const optim::StepStats st = opt.end_step();
  EXPECT_TRUE(st.skipped);
  EXPECT_FALSE(st.first_nonfinite_buffer.has_value());  // every gradient was finite
  EXPECT_TRUE(std::isfinite(st.grad_norm));
  EXPECT_EQ(opt.step_count(), 1);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(buffer_bytes(opt, i), before[i]) << "buffer " << i;
}

TEST(AdamWPerBuffer, EveryBufferMustBeUpdatedUnlessTheStepIsSkipped) {
  auto ctx = cpu();
  UnitBuffers t(ctx);
  optim::AdamW opt(t.buffers, {});
  opt.begin_step(1e-3f);
  opt.update_buffer(0);
  EXPECT_THROW(opt.end_step(), InvalidArgument);
  EXPECT_EQ(opt.step_count(), 0);
  EXPECT_THROW(opt.update_buffer(0), InvalidArgument);  // the step is closed
}

}  // namespace
}  // namespace coat
