// The training step's state that stays on the GPU, against the CPU on random non-zero inputs: the skip flag
// of the fused AdamW step (fast and general paths, with the compute copy), ops::flag_nonfinite, AdamW's
// per-buffer step with a non-finite buffer or loss, and the cross-entropy sums (zero rows, sums added up on
// the device, bad targets counted).
//
// Tolerance: exact bytes for the optimizer (both backends run the scalar code of moment_codec.h and
// adamw_math; a skipped step writes nothing) and for the flag; the cross-entropy sums within the tolerance
// of test_embedding_loss_adamw_cuda.cpp (2e-6 per counted row: the device's expf and its online sum).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/elementwise.h"
#include "coat/ops/loss.h"
#include "coat/ops/optimizer.h"
#include "coat/ops/quantized_moment.h"
#include "coat/optim/adamw.h"
#include "cuda_test_util.h"
#include "expect_error.h"
#include "random_values.h"

namespace coat {
namespace {

using ops::MomentEncoding;
using ops::MomentSpec;
using ops::QuantizedMoment;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

class CudaDeviceStep : public test::CudaTest {};

ops::AdamWHyper hyper(int64_t step) {
  ops::AdamWHyper h;
  h.lr = 1e-3f;
  h.weight_decay = 0.1f;
  h.grad_scale = 0.37f;
  h.step = step;
  return h;
}

QuantizedMoment moment_to(const QuantizedMoment& m, const ContextPtr& ctx) {
  QuantizedMoment d = m;
  d.codes = ops::to(m.codes, ctx);
  if (m.scale.defined()) d.scale = ops::to(m.scale, ctx);
  if (m.expo.defined()) d.expo = ops::to(m.expo, ctx);
  if (m.center.defined()) d.center = ops::to(m.center, ctx);
  return d;
}

std::vector<std::vector<uint8_t>> moment_bytes(const QuantizedMoment& m) {
  std::vector<std::vector<uint8_t>> out;
  for (const auto& [suffix, t] : m.tensors()) out.push_back(ops::to_bytes(t));
  return out;
}

// Group 128: the fused one-launch path; group 100: the general path (several launches, the compute copy
// written in its update pass). A set flag: nothing written on the GPU; a clear one: the CPU's bytes.
TEST_F(CudaDeviceStep, SkipFlagLeavesEverythingBitIdenticalAndAClearFlagMatchesCpu) {
  const int64_t n = 3 * 4096 + 77;  // whole tiles, a partial tile and a partial group
  for (int64_t group : {128, 100}) {
    for (const MomentSpec& spec : {MomentSpec{}, MomentSpec{MomentEncoding::FP8Expand, DType::E4M3, group},
                                   MomentSpec{MomentEncoding::FP8, DType::E5M2, group}}) {
      const std::string what = ops::moment_spec_str(spec) + " group " + std::to_string(group);
      Tensor p_c = test::nonzero_normal_tensor(cpu, {n}, DType::F32, 1, 0.0, 0.02);
      QuantizedMoment m_c = ops::make_moment(cpu, n, spec, MemoryCategory::OptimizerState);
      QuantizedMoment v_c = ops::make_moment(cpu, n, spec, MemoryCategory::OptimizerState);
      ops::adamw_step_quantized(p_c, test::nonzero_normal_tensor(cpu, {n}, DType::F32, 2, 0.0, 1e-3), m_c, v_c,
                                hyper(1), {{0, 5000}, {9000, n}});
      Tensor p_g = ops::to(p_c, gpu);
      QuantizedMoment m_g = moment_to(m_c, gpu), v_g = moment_to(v_c, gpu);
      Tensor c_g = ops::zeros(gpu, {n}, DType::BF16);  // not bf16(p): a refresh would show
      const Tensor g_c = test::nonzero_normal_tensor(cpu, {n}, DType::F32, 3, 0.0, 1e-3);
      const Tensor g_g = ops::to(g_c, gpu);
      const std::vector<uint8_t> p0 = ops::to_bytes(p_g), c0 = ops::to_bytes(c_g);
      const auto m0 = moment_bytes(m_g), v0 = moment_bytes(v_g);

      const Tensor set = ops::full(gpu, {1}, 1.0, DType::I32);
      ops::adamw_step_quantized(p_g, g_g, m_g, v_g, hyper(2), {{0, 5000}, {9000, n}}, &c_g, &set);
      EXPECT_EQ(ops::to_bytes(p_g), p0) << what;
      EXPECT_EQ(ops::to_bytes(c_g), c0) << what;
      EXPECT_EQ(moment_bytes(m_g), m0) << what;
      EXPECT_EQ(moment_bytes(v_g), v0) << what;

      const Tensor clear = ops::full(gpu, {1}, 0.0, DType::I32);
      ops::adamw_step_quantized(p_c, g_c, m_c, v_c, hyper(2), {{0, 5000}, {9000, n}});
      ops::adamw_step_quantized(p_g, g_g, m_g, v_g, hyper(2), {{0, 5000}, {9000, n}}, &c_g, &clear);
      EXPECT_EQ(ops::to_bytes(p_g), ops::to_bytes(p_c)) << what;
      EXPECT_EQ(ops::to_bytes(c_g), ops::to_bytes(ops::cast(p_c, DType::BF16))) << what;
      EXPECT_EQ(moment_bytes(m_g), moment_bytes(m_c)) << what;
      EXPECT_EQ(moment_bytes(v_g), moment_bytes(v_c)) << what;
    }
  }
}

TEST_F(CudaDeviceStep, FlagNonfiniteMatchesCpu) {
  const int64_t n = 100003;
  for (DType t : {DType::F32, DType::F64}) {
    for (int64_t bad_at : {int64_t{-1}, int64_t{0}, int64_t{77777}, n - 1}) {
      std::vector<double> x = test::nonzero_normal(size_t(n), 4, 0.0, 1e3);
      if (bad_at >= 0) x[size_t(bad_at)] = bad_at == 0 ? kNaN : bad_at == n - 1 ? -kInf : kInf;
      Tensor f_c = ops::zeros(cpu, {1}, DType::I32);
      Tensor f_g = ops::zeros(gpu, {1}, DType::I32);
      ops::flag_nonfinite(f_c, ops::from_vector(cpu, {n}, t, x));
      ops::flag_nonfinite(f_g, ops::from_vector(gpu, {n}, t, x));
      EXPECT_EQ(ops::to_double_vector(f_g), ops::to_double_vector(f_c)) << dtype_name(t) << " bad at " << bad_at;
      EXPECT_EQ(ops::to_double_vector(f_g)[0], bad_at >= 0 ? 1.0 : 0.0);
    }
  }
}

/// Four unit buffers (one empty) with compute copies, on ctx; the same values on every device.
std::vector<optim::OptimBuffer> unit_buffers(const ContextPtr& ctx) {
  std::vector<optim::OptimBuffer> out;
  const int64_t sizes[] = {5000, 0, 9001, 4096};
  for (int i = 0; i < 4; ++i) {
    const int64_t n = sizes[i];
    optim::OptimBuffer b;
    b.name = "unit" + std::to_string(i);
    b.param = test::nonzero_normal_tensor(ctx, {n}, DType::F32, 10 + i, 0.0, 0.02);
    b.grad = test::nonzero_normal_tensor(ctx, {n}, DType::F32, 20 + i, 0.0, 1e-3);
    if (n > 0) b.decay.push_back({0, n / 2});
    b.compute = ops::cast(b.param, DType::BF16);
    out.push_back(std::move(b));
  }
  return out;
}

optim::AdamWConfig fp8_config() {
  optim::AdamWConfig c;
  c.weight_decay = 0.1f;
  c.exp_avg = {MomentEncoding::FP8Expand, DType::E4M3, 128};
  c.exp_avg_sq = {MomentEncoding::FP8Expand, DType::E5M2, 128};
  return c;
}

void expect_same_optimizer(const optim::AdamW& gpu_opt, const optim::AdamW& cpu_opt, const std::string& what) {
  for (size_t i = 0; i < cpu_opt.buffers().size(); ++i) {
    EXPECT_EQ(ops::to_bytes(gpu_opt.buffers()[i].param), ops::to_bytes(cpu_opt.buffers()[i].param)) << what << i;
    EXPECT_EQ(ops::to_bytes(gpu_opt.buffers()[i].compute), ops::to_bytes(cpu_opt.buffers()[i].compute)) << what << i;
  }
  const auto a = gpu_opt.state_tensors(), b = cpu_opt.state_tensors();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(ops::to_bytes(a[i].second), ops::to_bytes(b[i].second)) << what << a[i].first;
}

// A good step, a step whose buffer 2 is not finite (updated in the order 3, 2, 1, 0: buffer 3 keeps its
// update), a step after a non-finite loss, and a good step again: the GPU's bytes and stats are the CPU's.
TEST_F(CudaDeviceStep, PerBufferStepMatchesCpuThroughSkippedSteps) {
  optim::AdamW on_cpu(unit_buffers(cpu), fp8_config()), on_gpu(unit_buffers(gpu), fp8_config());
  const std::vector<size_t> order{3, 2, 1, 0};
  auto run = [&](optim::AdamW& opt, const ContextPtr& ctx, double loss) {
    opt.begin_step(1e-3f);
    opt.skip_if_nonfinite(ops::from_vector(ctx, {1}, DType::F64, std::vector<double>{loss}));
    for (size_t i : order) opt.update_buffer(i);
    return opt.end_step();
  };
  for (int s = 0; s < 4; ++s) {
    const double loss = s == 2 ? kNaN : 3.5;
    if (s == 1) {
      for (optim::AdamW* opt : {&on_cpu, &on_gpu}) {
        Tensor g = opt->buffers()[2].grad.slice(0, 6000, 6001);
        ops::fill_(g, kInf);
      }
    }
    if (s == 2) {
      for (optim::AdamW* opt : {&on_cpu, &on_gpu}) {
        Tensor g = opt->buffers()[2].grad.slice(0, 6000, 6001);
        ops::fill_(g, 1e-3);
      }
    }
    const optim::StepStats a = run(on_cpu, cpu, loss), b = run(on_gpu, gpu, loss);
    const std::string what = "step " + std::to_string(s) + " buffer ";
    EXPECT_EQ(b.skipped, a.skipped) << what;
    EXPECT_EQ(b.skipped, s == 1 || s == 2) << what;
    EXPECT_EQ(b.first_nonfinite_buffer, a.first_nonfinite_buffer) << what;
    EXPECT_EQ(std::isnan(b.grad_norm) || std::isinf(b.grad_norm), s == 1) << what;
    if (s != 1) {
      // The GPU adds a buffer's squares in a tree, the CPU in order: in double the two agree to ~1e-15 relative
      // (measured on an H100: equal to the 6 digits printed); the optimizer's bytes above are what must match.
      EXPECT_NEAR(b.grad_norm, a.grad_norm, 1e-12 * a.grad_norm) << what;
    }
    EXPECT_EQ(on_gpu.step_count(), on_cpu.step_count()) << what;
    expect_same_optimizer(on_gpu, on_cpu, what);
  }
  EXPECT_EQ(on_gpu.step_count(), 2);
}

TEST_F(CudaDeviceStep, CrossEntropySumsStayOnTheDeviceAndAddUp) {
  constexpr int64_t kIgnore = -100;
  const int64_t rows = 48, vocab = 1000;
  Tensor logits_c = test::nonzero_normal_tensor(cpu, {rows, vocab}, DType::F32, 30, 0.0, 3.0);
  std::vector<double> tv(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) tv[size_t(r)] = r % 7 == 3 ? kIgnore : double((r * 131) % vocab);
  Tensor targets_c = ops::from_vector(cpu, {rows}, DType::I32, tv);
  Tensor logits_g = ops::to(logits_c, gpu), targets_g = ops::to(targets_c, gpu);
  Tensor totals_c = ops::zeros(cpu, {3}, DType::F64), totals_g = ops::zeros(gpu, {3}, DType::F64);
  for (int k = 0; k < 3; ++k) {
    const double scale = 0.25 * (k + 1);
    const ops::CrossEntropyResult a = ops::cross_entropy(logits_c, targets_c, kIgnore, scale);
    const ops::CrossEntropyResult b = ops::cross_entropy(logits_g, targets_g, kIgnore, scale, k != 1);
    EXPECT_EQ(b.loss_sum.device(), Device::cuda(0));
    EXPECT_EQ(b.count.device(), Device::cuda(0));
    ops::add_(totals_c, a.totals());
    ops::add_(totals_g, b.totals());
  }
  const ops::CrossEntropyValues c = ops::read_totals(totals_c, vocab, kIgnore);
  const ops::CrossEntropyValues g = ops::read_totals(totals_g, vocab, kIgnore);
  EXPECT_EQ(g.count, c.count);
  EXPECT_NEAR(g.loss_sum, c.loss_sum, 2e-6 * static_cast<double>(c.count));

  // No rows: zero sums, no launch over rows.
  const ops::CrossEntropyResult empty = ops::cross_entropy(ops::zeros(gpu, {0, vocab}, DType::F32),
                                                           ops::zeros(gpu, {0}, DType::I64), kIgnore, 1.0);
  EXPECT_EQ(empty.read().loss_sum, 0.0);
  EXPECT_EQ(empty.read().count, 0);

  // Two bad targets: counted in the totals, the first named by read().
  std::vector<double> bad = tv;
  bad[5] = -5;
  bad[9] = vocab;
  const ops::CrossEntropyResult r = ops::cross_entropy(logits_g, ops::from_vector(gpu, {rows}, DType::I64, bad),
                                                       kIgnore, 1.0);
  test::expect_error_containing([&] { r.read(); }, "[cross_entropy] target -5 at position 5 is outside [0, V)");
  test::expect_error_containing([&] { ops::read_totals(r.totals(), vocab, kIgnore); }, "2 targets are outside");
}

}  // namespace
}  // namespace coat
