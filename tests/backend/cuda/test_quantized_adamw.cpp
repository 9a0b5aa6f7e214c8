// CUDA compressed optimizer moments (coat/ops/quantized_moment.h) against the CPU backend on random, non-zero
// inputs: the fused AdamW step for every pair of encodings, the general path (other group sizes), many decay
// ranges, unaligned views, quantize / dequantize; plus a disabled bandwidth benchmark.
//
// Tolerance: exact bytes everywhere (params, codes, scale, expo, center). Both backends run the scalar code
// of moment_codec.h and adamw_math::adamw_update, one IEEE operation (or explicit fma) at a time; the group
// statistics are exact max / min of keys, independent of the reduction order.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "coat/backend/moment_codec.h"
#include "coat/core/random_generator.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/optimizer.h"
#include "coat/ops/quantized_moment.h"
#include "coat/ops/runtime.h"
#include "cuda_test_util.h"
#include "cuda_timing.h"

#ifdef COAT_WITH_CUDA
#include <cuda_runtime_api.h>

#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/cuda_context.h"
#endif

namespace coat {
namespace {

using ops::DecayRange;
using ops::MomentEncoding;
using ops::MomentSpec;
using ops::QuantizedMoment;

class CudaQuantizedAdamW : public test::CudaTest {};

MomentSpec spec_of(MomentEncoding e, DType fmt = DType::E4M3, int64_t group = 128) {
  MomentSpec s;
  s.encoding = e;
  s.fp8 = fmt;
  s.group_size = group;
  return s;
}

/// The six encodings of the brief: F32, BF16, FP8 E4M3 / E5M2, FP8Expand E4M3 / E5M2.
std::vector<MomentSpec> all_specs(int64_t group = 128) {
  return {spec_of(MomentEncoding::F32),
          spec_of(MomentEncoding::BF16),
          spec_of(MomentEncoding::FP8, DType::E4M3, group),
          spec_of(MomentEncoding::FP8, DType::E5M2, group),
          spec_of(MomentEncoding::FP8Expand, DType::E4M3, group),
          spec_of(MomentEncoding::FP8Expand, DType::E5M2, group)};
}

/// Non-zero gradients, normal with per-64-element row scales in [1e-3, 1].
Tensor random_grad(const ContextPtr& ctx, int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> g(static_cast<size_t>(n));
  float scale = 1.0f;
  for (int64_t i = 0; i < n; ++i) {
    if (i % 64 == 0) scale = std::pow(10.0f, -3.0f * u(gen));
    float x = normal(gen);
    if (x == 0.0f) x = 1.0f;
    g[size_t(i)] = scale * x;
  }
  return ops::from_vector(ctx, {n}, DType::F32, g);
}

/// An embedding's gradient: rows of 256 elements, about a third of them all zero (tokens absent from the batch,
/// drawn anew each seed), the others normal with a per-row scale in [1e-4, 1] and an exact zero here and there.
Tensor sparse_rows_grad(const ContextPtr& ctx, int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> g(static_cast<size_t>(n), 0.0f);
  for (int64_t row = 0; row * 256 < n; ++row) {
    if (u(gen) < 0.35f) continue;
    const float scale = std::pow(10.0f, -4.0f * u(gen));
    for (int64_t i = row * 256; i < std::min(n, row * 256 + 256); ++i) g[size_t(i)] = u(gen) < 0.02f ? 0.0f : scale * normal(gen);
  }
  return ops::from_vector(ctx, {n}, DType::F32, g);
}

Tensor random_param(const ContextPtr& ctx, int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> p(static_cast<size_t>(n));
  for (float& x : p) x = normal(gen);
  return ops::from_vector(ctx, {n}, DType::F32, p);
}

QuantizedMoment to_device(const QuantizedMoment& m, const ContextPtr& ctx) {
  QuantizedMoment d = m;
  d.codes = ops::to(m.codes, ctx);
  if (m.scale.defined()) d.scale = ops::to(m.scale, ctx);
  if (m.expo.defined()) d.expo = ops::to(m.expo, ctx);
  if (m.center.defined()) d.center = ops::to(m.center, ctx);
  return d;
}

ops::AdamWHyper hyper(int64_t step) {
  ops::AdamWHyper h;
  h.lr = 1e-3f;
  h.weight_decay = 0.1f;
  h.grad_scale = 0.37f;
  h.step = step;
  return h;
}

/// Exact bytes of every tensor of the two moments, named in the failure message.
void expect_same_moment(const QuantizedMoment& gpu, const QuantizedMoment& cpu, const std::string& what) {
  const auto a = gpu.tensors(), b = cpu.tensors();
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    const std::vector<uint8_t> x = ops::to_bytes(a[i].second), y = ops::to_bytes(b[i].second);
    ASSERT_EQ(x.size(), y.size()) << what << a[i].first;
    size_t first = 0;
    while (first < x.size() && x[first] == y[first]) ++first;
    ASSERT_EQ(first, x.size()) << what << " '" << a[i].first << "' differs first at byte " << first;
  }
}

/// CPU moments after `warm` CPU steps (realistic states), then `steps` steps on both devices from copies of
/// that state, compared after every step: param, moments and the step maxima (CUDA's fused path writes them
/// in the update's pass; the CPU by ops::step_maxima afterwards).
void run_and_compare(const ContextPtr& cpu, const ContextPtr& gpu, int64_t n, const MomentSpec& ms,
                     const MomentSpec& vs, const std::vector<DecayRange>& ranges, int warm, int steps,
                     int64_t offset = 0, Tensor (*grad_of)(const ContextPtr&, int64_t, uint32_t) = random_grad) {
  const std::string what = "m " + ops::moment_spec_str(ms) + ", v " + ops::moment_spec_str(vs) + ": ";
  // offset > 0: param, grad and m codes are views starting `offset` elements into their storage.
  Tensor p_all = random_param(cpu, n + offset, 1);
  Tensor p_c = p_all.slice(0, offset, n + offset);
  QuantizedMoment m_c = ops::make_moment(cpu, n, ms, MemoryCategory::OptimizerState);
  QuantizedMoment v_c = ops::make_moment(cpu, n, vs, MemoryCategory::OptimizerState);
  for (int s = 1; s <= warm; ++s)
    ops::adamw_step_quantized(p_c, grad_of(cpu, n, 100 + s), m_c, v_c, hyper(s), ranges);
  Tensor p_g_all = ops::to(p_all, gpu);
  Tensor p_g = p_g_all.slice(0, offset, n + offset);
  QuantizedMoment m_g = to_device(m_c, gpu), v_g = to_device(v_c, gpu);
  if (offset > 0) {
    Tensor codes_all = ops::zeros(gpu, {n + offset}, m_c.codes.dtype(), MemoryCategory::OptimizerState);
    Tensor view = codes_all.slice(0, offset, n + offset);
    ops::copy_(view, m_g.codes);
    m_g.codes = view;
  }
  const int64_t granules = ops::step_maxima_count(n);
  Tensor mx_c = ops::zeros(cpu, {granules}, DType::F32), mx_g = ops::zeros(gpu, {granules}, DType::F32);
  for (int s = warm + 1; s <= warm + steps; ++s) {
    Tensor g_c = grad_of(cpu, n + offset, 200 + s).slice(0, offset, n + offset);
    Tensor g_g = ops::to(g_c, gpu);
    if (offset > 0) {
      Tensor g_all = ops::zeros(gpu, {n + offset}, DType::F32);
      Tensor view = g_all.slice(0, offset, n + offset);
      ops::copy_(view, g_g);
      g_g = view;
    }
    const ops::AdamWHyper h = hyper(s == warm + steps && steps > 2 ? 1000 : s);
    ops::adamw_step_quantized(p_c, g_c, m_c, v_c, h, ranges, nullptr, nullptr, &mx_c);
    ops::adamw_step_quantized(p_g, g_g, m_g, v_g, h, ranges, nullptr, nullptr, &mx_g);
    ASSERT_EQ(ops::to_bytes(p_g), ops::to_bytes(p_c)) << what << "param after step " << s;
    ASSERT_EQ(ops::to_bytes(mx_g), ops::to_bytes(mx_c)) << what << "maxima after step " << s;
    expect_same_moment(m_g, m_c, what + "m after step " + std::to_string(s));
    expect_same_moment(v_g, v_c, what + "v after step " + std::to_string(s));
    if (::testing::Test::HasFatalFailure()) return;
  }
}

TEST_F(CudaQuantizedAdamW, EveryEncodingPairIsBitIdenticalToCpu) {
  const int64_t n = 3 * 128 * 1000 + 77;  // a partial tile and a partial group at the end
  const std::vector<DecayRange> ranges = {{0, 1000}, {1000, 5000}, {7001, 200000}, {200003, 384000}};
  for (const MomentSpec& ms : all_specs())
    for (const MomentSpec& vs : all_specs()) {
      run_and_compare(cpu, gpu, n, ms, vs, ranges, 2, 3);
      if (HasFatalFailure()) return;
    }
}

// The BF16 compute copy written in the fused pass (fast path: group 128; general path: group 100) has the
// bits of a separate F32 -> BF16 copy of the updated params, and the params stay those of the CPU.
TEST_F(CudaQuantizedAdamW, FusedComputeCopyEqualsACopyAfterTheStep) {
  const int64_t n = 3 * 128 * 1000 + 77;
  for (int64_t group : {128, 100}) {
    const MomentSpec spec{MomentEncoding::FP8Expand, DType::E4M3, group};
    for (const MomentSpec& ms : {MomentSpec{}, spec}) {
      Tensor p_c = random_param(cpu, n, 3);
      QuantizedMoment m_c = ops::make_moment(cpu, n, ms, MemoryCategory::OptimizerState);
      QuantizedMoment v_c = ops::make_moment(cpu, n, ms, MemoryCategory::OptimizerState);
      Tensor p_g = ops::to(p_c, gpu);
      QuantizedMoment m_g = to_device(m_c, gpu), v_g = to_device(v_c, gpu);
      Tensor c_g = ops::zeros(gpu, {n}, DType::BF16);
      for (int s = 1; s <= 2; ++s) {
        Tensor g_c = random_grad(cpu, n, 300 + s);
        Tensor g_g = ops::to(g_c, gpu);
        ops::adamw_step_quantized(p_c, g_c, m_c, v_c, hyper(s), {{0, 5000}, {9000, n}});
        ops::adamw_step_quantized(p_g, g_g, m_g, v_g, hyper(s), {{0, 5000}, {9000, n}}, &c_g);
        ASSERT_EQ(ops::to_bytes(p_g), ops::to_bytes(p_c)) << group << " step " << s;
        ASSERT_EQ(ops::to_bytes(c_g), ops::to_bytes(ops::cast(p_c, DType::BF16))) << group << " step " << s;
      }
    }
  }
}

// An embedding-like unit (vocabulary 512 x hidden 256: 32 whole tiles) whose gradient has all-zero rows that
// change from step to step and rows whose scales differ by 10^4: three steps from zero moments, every pair of
// FP8 encodings (a training run of that shape once stored garbage in the first codes of v on the GPU).
TEST_F(CudaQuantizedAdamW, SparseRowsLikeAnEmbedding) {
  const int64_t n = 512 * 256;
  for (const MomentSpec& ms : all_specs())
    for (const MomentSpec& vs : all_specs()) {
      run_and_compare(cpu, gpu, n, ms, vs, {{0, n}}, 0, 3, 0, sparse_rows_grad);
      if (HasFatalFailure()) return;
    }
}

// A transformer block's unit of a small Llama (hidden 256, 786,944 elements: 192 whole tiles and a last tile
// of 512 elements, whole vectors of the first 128 threads), its norm weights outside the decay ranges, with
// the BF16 compute copy: every pair of FP8 encodings.
TEST_F(CudaQuantizedAdamW, BlockUnitWithAShortLastTile) {
  const int64_t n = 786'944;
  const std::vector<DecayRange> ranges = {{0, 196'608}, {196'864, 786'688}};
  for (const MomentSpec& ms : all_specs())
    for (const MomentSpec& vs : all_specs()) {
      run_and_compare(cpu, gpu, n, ms, vs, ranges, 0, 3);
      if (HasFatalFailure()) return;
    }
}

// The same unit with every buffer (param, grad, both moments' codes, the BF16 compute copy) a view at the start
// of a longer buffer: the 4096 elements after each view are the bytes they were after three steps (the
// short last tile once stored garbage past the end of the codes: a NaN in the next allocation's moment).
TEST_F(CudaQuantizedAdamW, NothingPastTheEndIsWritten) {
  const int64_t n = 786'944, pad = 4096;
  const std::vector<DecayRange> ranges = {{0, 196'608}, {196'864, 786'688}};
  const std::vector<std::pair<MomentSpec, MomentSpec>> pairs = {
      {spec_of(MomentEncoding::FP8), spec_of(MomentEncoding::FP8)},
      {spec_of(MomentEncoding::F32), spec_of(MomentEncoding::BF16)},
      {spec_of(MomentEncoding::FP8Expand), spec_of(MomentEncoding::FP8Expand, DType::E5M2)}};
  for (const auto& [ms, vs] : pairs) {
    // A longer buffer of non-zero bytes whose first n elements hold `head` (or stay as they are).
    const auto longer = [&](DType dtype, uint32_t seed, const Tensor* head) {
      Tensor all = ops::to(ops::cast(random_param(cpu, n + pad, seed), dtype), gpu);
      Tensor view = all.slice(0, 0, n);
      if (head != nullptr) ops::copy_(view, *head);
      return std::make_pair(all, view);
    };
    auto [p_all, p] = longer(DType::F32, 1, nullptr);
    auto [g_all, g] = longer(DType::F32, 2, nullptr);
    auto [c_all, c] = longer(DType::BF16, 3, nullptr);
    QuantizedMoment m = ops::make_moment(gpu, n, ms, MemoryCategory::OptimizerState);
    QuantizedMoment v = ops::make_moment(gpu, n, vs, MemoryCategory::OptimizerState);
    auto [m_all, m_view] = longer(m.codes.dtype(), 4, &m.codes);
    auto [v_all, v_view] = longer(v.codes.dtype(), 5, &v.codes);
    m.codes = m_view;
    v.codes = v_view;
    const std::vector<Tensor> alls = {p_all, g_all, c_all, m_all, v_all};
    std::vector<std::vector<uint8_t>> tails;
    for (const Tensor& t : alls) tails.push_back(ops::to_bytes(t.slice(0, n, n + pad)));
    for (int s = 1; s <= 3; ++s) ops::adamw_step_quantized(p, g, m, v, hyper(s), ranges, &c);
    for (size_t i = 0; i < alls.size(); ++i)
      EXPECT_EQ(ops::to_bytes(alls[i].slice(0, n, n + pad)), tails[i])
          << "m " << ops::moment_spec_str(ms) << ", v " << ops::moment_spec_str(vs) << ": buffer " << i
          << " (param, grad, compute copy, m codes, v codes) was written past its end";
  }
}

TEST_F(CudaQuantizedAdamW, OneStepFromZeroMoments) {
  const int64_t n = 3 * 128 * 1000 + 77;
  for (const MomentSpec& ms : all_specs())
    for (const MomentSpec& vs : all_specs()) {
      run_and_compare(cpu, gpu, n, ms, vs, {{0, n}}, 0, 1);
      if (HasFatalFailure()) return;
    }
}

TEST_F(CudaQuantizedAdamW, GeneralPathGroupSizes) {
  // Group sizes outside the fast path (not a power of two in [4, 1024]) and mixed sizes; the smallest and
  // largest fast ones too.
  const int64_t n = 200'003;
  const std::vector<std::pair<int64_t, int64_t>> sizes = {{1, 2},    {100, 128}, {4096, 65536}, {128, 100},
                                                          {4, 1024}, {2048, 64}, {3, 3}};
  for (auto [gm, gv] : sizes) {
    for (MomentEncoding e : {MomentEncoding::FP8, MomentEncoding::FP8Expand}) {
      run_and_compare(cpu, gpu, n, spec_of(e, DType::E4M3, gm),
                      spec_of(MomentEncoding::FP8Expand, DType::E5M2, gv), {{5, 150'000}}, 2, 2);
      if (HasFatalFailure()) return;
    }
    run_and_compare(cpu, gpu, n, spec_of(MomentEncoding::BF16), spec_of(MomentEncoding::FP8, DType::E5M2, gv),
                    {}, 1, 1);
    if (HasFatalFailure()) return;
  }
}

TEST_F(CudaQuantizedAdamW, ManyDecayRanges) {
  const int64_t n = 300'007;
  // 400 ranges (more than travel inline), some touching (merged), some empty, some tiny.
  std::vector<DecayRange> ranges;
  int64_t at = 3;
  for (int i = 0; i < 400; ++i) {
    const int64_t len = (i % 7 == 0) ? 0 : (i % 5 == 0 ? 1 : 17 * (i % 13) + 5);
    ranges.push_back({at, at + len});
    at += len + (i % 3 == 0 ? 0 : 1 + (i * 37) % 500);
  }
  ASSERT_LE(at, n);
  const MomentSpec ex = spec_of(MomentEncoding::FP8Expand, DType::E4M3);
  run_and_compare(cpu, gpu, n, ex, ex, ranges, 1, 2);
  run_and_compare(cpu, gpu, n, spec_of(MomentEncoding::F32), spec_of(MomentEncoding::BF16), ranges, 1, 1);
  run_and_compare(cpu, gpu, n, spec_of(MomentEncoding::FP8, DType::E4M3, 100), ex, ranges, 1,
                  1);  // general path
  std::vector<DecayRange> few(ranges.begin(), ranges.begin() + 50);
  run_and_compare(cpu, gpu, n, spec_of(MomentEncoding::FP8, DType::E4M3, 100), ex, few, 1, 1);
}

// The fused step's maxima propagate a NaN and an inf of the params (here already in them: zero gradients and
// moments leave every param as it was) as ops::step_maxima does, in whole granules and in the short last one;
// a skipped step leaves them as they were.
TEST_F(CudaQuantizedAdamW, StepMaximaPropagateNanAndInfAndStayUnderSkip) {
  const int64_t n = 2 * 4096 + 200;  // two whole tiles, then 200 elements: one whole granule and one of 72
  Tensor p_c = random_param(cpu, n, 7);
  const std::vector<double> wide = ops::to_double_vector(p_c);
  std::vector<float> host(wide.begin(), wide.end());
  host[130] = std::numeric_limits<float>::quiet_NaN();
  host[4096 + 5] = -std::numeric_limits<float>::infinity();
  host[n - 3] = std::numeric_limits<float>::quiet_NaN();
  p_c = ops::from_vector(cpu, {n}, DType::F32, host);
  const MomentSpec ex = spec_of(MomentEncoding::FP8Expand, DType::E4M3);
  QuantizedMoment m_c = ops::make_moment(cpu, n, ex, MemoryCategory::OptimizerState);
  QuantizedMoment v_c = ops::make_moment(cpu, n, ex, MemoryCategory::OptimizerState);
  Tensor p_g = ops::to(p_c, gpu);
  QuantizedMoment m_g = to_device(m_c, gpu), v_g = to_device(v_c, gpu);
  const int64_t granules = (n + 127) / 128;
  Tensor mx_g = ops::zeros(gpu, {granules}, DType::F32), expected = ops::zeros(cpu, {granules}, DType::F32);
  ops::AdamWHyper h = hyper(1);
  h.weight_decay = 0.0f;
  ops::adamw_step_quantized(p_g, ops::zeros(gpu, {n}, DType::F32), m_g, v_g, h, {}, nullptr, nullptr, &mx_g);
  ops::step_maxima(p_c, expected);
  ASSERT_EQ(ops::to_bytes(mx_g), ops::to_bytes(expected));
  const std::vector<double> got = ops::to_double_vector(mx_g);
  EXPECT_TRUE(std::isnan(got[1]) && std::isinf(got[32]) && std::isnan(got[granules - 1]));
  EXPECT_FALSE(std::isnan(got[0]) || std::isnan(got[granules - 2]));
  // Skipped: the flag set, a gradient that would move every param; params and maxima stay.
  Tensor flag = ops::from_vector(gpu, {1}, DType::I32, std::vector<float>{1.0f});
  Tensor marker = ops::full(gpu, {granules}, 7.0, DType::F32);
  const std::vector<uint8_t> before = ops::to_bytes(p_g);  // NaNs as the device's arithmetic left them
  ops::adamw_step_quantized(p_g, ops::to(random_grad(cpu, n, 9), gpu), m_g, v_g, hyper(2), {}, nullptr, &flag, &marker);
  EXPECT_EQ(ops::to_bytes(p_g), before);
  EXPECT_EQ(ops::to_double_vector(marker), std::vector<double>(static_cast<size_t>(granules), 7.0));
}

TEST_F(CudaQuantizedAdamW, UnalignedViews) {
  const int64_t n = 100'003;
  const MomentSpec ex = spec_of(MomentEncoding::FP8Expand, DType::E4M3);
  run_and_compare(cpu, gpu, n, ex, ex, {{0, n}}, 1, 2, 1);
  run_and_compare(cpu, gpu, n, spec_of(MomentEncoding::BF16), spec_of(MomentEncoding::F32), {{0, 777}}, 1, 1,
                  3);
}

TEST_F(CudaQuantizedAdamW, ManyTilesPerBlock) {
  // More tiles than resident blocks (132 SMs x 2 blocks x 4096 elements on an H100): each block walks several
  // tiles, with the next tile's decoders prepared while the current one is encoded.
  const int64_t n = 4'000'037;
  const std::vector<DecayRange> ranges = {{0, 1'000'000}, {1'000'003, 1'000'004}, {2'000'000, 3'999'000}};
  run_and_compare(cpu, gpu, n, spec_of(MomentEncoding::FP8Expand, DType::E4M3),
                  spec_of(MomentEncoding::FP8Expand, DType::E5M2, 64), ranges, 1, 2);
  run_and_compare(cpu, gpu, n, spec_of(MomentEncoding::FP8, DType::E4M3, 256), spec_of(MomentEncoding::BF16),
                  ranges, 1, 1);
  run_and_compare(cpu, gpu, n, spec_of(MomentEncoding::F32), spec_of(MomentEncoding::FP8, DType::E5M2, 32),
                  {}, 1, 1);
}

TEST_F(CudaQuantizedAdamW, TinyAndOddSizes) {
  const MomentSpec ex = spec_of(MomentEncoding::FP8Expand, DType::E4M3);
  for (int64_t n :
       {int64_t{1}, int64_t{3}, int64_t{5}, int64_t{127}, int64_t{1023}, int64_t{1025}, int64_t{4099}}) {
    run_and_compare(cpu, gpu, n, ex, spec_of(MomentEncoding::FP8Expand, DType::E5M2, 4), {{0, (n + 1) / 2}},
                    1, 2);
    run_and_compare(cpu, gpu, n, spec_of(MomentEncoding::FP8, DType::E5M2, 8), spec_of(MomentEncoding::BF16),
                    {}, 1, 1);
    if (HasFatalFailure()) return;
  }
}

TEST_F(CudaQuantizedAdamW, QuantizeAndDequantizeMatchCpu) {
  const int64_t n = 100'003;
  Tensor values = random_grad(cpu, n, 7);
  Tensor values_g = ops::to(values, gpu);
  for (int64_t group : {int64_t{4}, int64_t{128}, int64_t{100}, int64_t{65536}}) {
    for (const MomentSpec& spec : all_specs(group)) {
      const std::string what = ops::moment_spec_str(spec);
      QuantizedMoment c = ops::make_moment(cpu, n, spec, MemoryCategory::OptimizerState);
      QuantizedMoment g = ops::make_moment(gpu, n, spec, MemoryCategory::OptimizerState);
      ops::quantize_moment(values, c);
      ops::quantize_moment(values_g, g);
      expect_same_moment(g, c, what + " quantize");
      const Tensor dc = ops::dequantize_moment(c), dg = ops::dequantize_moment(g);
      ASSERT_EQ(dg.device(), Device::cuda(0));
      ASSERT_EQ(ops::to_bytes(dg), ops::to_bytes(dc)) << what << " dequantize";
    }
  }
}

/// Groups of 128 that the GPU's first guess of an expansion code gets wrong or cannot guess: values exactly
/// at the code bounds f U_r[j] and the float below each (the guess is off by one there), subnormal values,
/// a span that forces k = 1/16 (collapsed lower bounds), values near the largest float, an all-zero group,
/// and zeros among nonzero values.
template <DType Fmt>
std::vector<float> hard_expansion_groups() {
  namespace mc = moment_codec;
  std::vector<float> all;
  std::mt19937 gen(9);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  // 1. bounds: max 1e-2 at [0], min 1e-5 at [1] fix the statistics; then bounds and their neighbours.
  std::vector<float> g(128);
  for (float& x : g) x = static_cast<float>(1e-5 * std::pow(1e3, u(gen)));
  g[0] = 1e-2f;
  g[1] = -1e-5f;
  mc::GroupStats st;
  for (float x : g) mc::add_value(st, x);
  const mc::GroupCoder c = mc::expand_coder(mc::expand_meta(st, Fmt), Fmt);
  const int row = mc::expand_row(c.k);
  size_t at = 2;
  for (uint32_t j = 0; j + 1 < mc::max_finite_code(Fmt) && at + 1 < g.size(); ++j) {
    const float b = c.f * mc::expand_bound<Fmt>(row, j);
    if (!(b > 1e-5f && b < 1e-2f)) continue;
    g[at++] = (j % 2 ? -b : b);
    g[at++] = std::nextafter(b, 0.0f);
  }
  EXPECT_GT(at, 40u);
  all.insert(all.end(), g.begin(), g.end());
  // 2. subnormal and tiny normal values with zeros.
  for (int i = 0; i < 128; ++i) {
    const float x = static_cast<float>(std::ldexp(1.0 + u(gen), -150 + int(30 * u(gen))));
    all.push_back(i % 9 == 0 ? 0.0f : (i % 2 ? -x : x));
  }
  // 3. k = 1/16: 2^120 and the smallest subnormal, values log-uniform between.
  for (int i = 0; i < 128; ++i) {
    const float x = i == 0 ? std::ldexp(1.0f, 120) : i == 1 ? std::ldexp(1.0f, -149)
                                                            : static_cast<float>(std::ldexp(1.0, -149 + int(269 * u(gen))));
    all.push_back(i % 3 ? x : -x);
  }
  // 4. near the largest float; 5. all zero; 6. one nonzero value among zeros.
  for (int i = 0; i < 128; ++i) all.push_back(static_cast<float>(3.4e38 * (0.5 + 0.5 * u(gen))) * (i % 2 ? -1 : 1));
  for (int i = 0; i < 128; ++i) all.push_back(0.0f);
  for (int i = 0; i < 128; ++i) all.push_back(i == 77 ? -3e-3f : 0.0f);
  return all;
}

TEST_F(CudaQuantizedAdamW, ExpansionHardGroupsMatchCpu) {
  for (DType fmt : {DType::E4M3, DType::E5M2}) {
    const std::vector<float> v =
        fmt == DType::E4M3 ? hard_expansion_groups<DType::E4M3>() : hard_expansion_groups<DType::E5M2>();
    const int64_t n = static_cast<int64_t>(v.size());
    const MomentSpec spec = spec_of(MomentEncoding::FP8Expand, fmt);
    const std::string what = ops::moment_spec_str(spec);
    // quantize / dequantize (the general kernels)
    QuantizedMoment c = ops::make_moment(cpu, n, spec, MemoryCategory::OptimizerState);
    QuantizedMoment g = ops::make_moment(gpu, n, spec, MemoryCategory::OptimizerState);
    const Tensor values = ops::from_vector(cpu, {n}, DType::F32, v);
    ops::quantize_moment(values, c);
    ops::quantize_moment(ops::to(values, gpu), g);
    expect_same_moment(g, c, what + " quantize");
    ASSERT_EQ(ops::to_bytes(ops::dequantize_moment(g)), ops::to_bytes(ops::dequantize_moment(c))) << what;
    // the fused step from these moments (m as stored, v = |m|), with zero and with tiny gradients
    for (float grad : {0.0f, 1e-30f}) {
      std::vector<float> mag(v.size());
      for (size_t i = 0; i < v.size(); ++i) mag[i] = std::fabs(v[i]);
      QuantizedMoment m_c = c, v_c = ops::make_moment(cpu, n, spec, MemoryCategory::OptimizerState);
      m_c.codes = ops::clone(c.codes);
      m_c.scale = ops::clone(c.scale);
      m_c.expo = ops::clone(c.expo);
      m_c.center = ops::clone(c.center);
      ops::quantize_moment(ops::from_vector(cpu, {n}, DType::F32, mag), v_c);
      QuantizedMoment m_g = to_device(m_c, gpu), v_g = to_device(v_c, gpu);
      Tensor p_c = random_param(cpu, n, 4), p_g = ops::to(p_c, gpu);
      const Tensor g_c = ops::full(cpu, {n}, grad, DType::F32), g_g = ops::to(g_c, gpu);
      for (int s = 1; s <= 2; ++s) {
        ops::adamw_step_quantized(p_c, g_c, m_c, v_c, hyper(s), {{0, n}});
        ops::adamw_step_quantized(p_g, g_g, m_g, v_g, hyper(s), {{0, n}});
        ASSERT_EQ(ops::to_bytes(p_g), ops::to_bytes(p_c)) << what << " step " << s;
        expect_same_moment(m_g, m_c, what + " m after step " + std::to_string(s));
        expect_same_moment(v_g, v_c, what + " v after step " + std::to_string(s));
      }
    }
  }
}

// ---- timing (run with --gtest_also_run_disabled_tests) ----

#ifdef COAT_WITH_CUDA
using test::median_ms;
#endif

TEST_F(CudaQuantizedAdamW, DISABLED_Bandwidth) {
#ifdef COAT_WITH_CUDA
  cudaStream_t stream = static_cast<cuda::CudaContext&>(*gpu).stream();
  std::printf("device: %s\n", static_cast<cuda::CudaContext&>(*gpu).properties().str().c_str());
  RandomGenerator rng{1, 0};
  const int64_t n = 200'000'000;
  double copy_gbs = 0.0;
  {
    Tensor src = ops::zeros(gpu, {n}, DType::F32), dst = ops::zeros(gpu, {n}, DType::F32);
    const double ms = median_ms(stream, 10, [&] {
      COAT_CUDA_CHECK(
          cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), size_t(n) * 4, cudaMemcpyDeviceToDevice, stream));
    });
    copy_gbs = 8.0 * n / ms / 1e6;
    std::printf("[bw] D2D cudaMemcpy %.0f MB: %.3f ms, %.0f GB/s (read + write)\n", 4.0 * n / 1e6, ms,
                copy_gbs);
  }
  Tensor p = Tensor::empty(gpu, {n}, DType::F32), g = Tensor::empty(gpu, {n}, DType::F32);
  ops::normal_(p, rng, 0.0f, 1.0f);
  ops::normal_(g, rng, 0.0f, 0.01f);
  // A realistic decay layout: 96 matrices with a norm vector (no decay) after each.
  std::vector<DecayRange> layout;
  for (int64_t i = 0; i < 96; ++i) layout.push_back({i * (n / 96), (i + 1) * (n / 96) - 4096});
  struct Case {
    MomentSpec m, v;
    std::vector<DecayRange> ranges;
    const char* ranges_name;
  };
  const MomentSpec ex4 = spec_of(MomentEncoding::FP8Expand, DType::E4M3);
  const std::vector<Case> cases = {
      {ex4, ex4, {{0, n}}, "all"},
      {ex4, ex4, layout, "96 ranges"},
      {ex4, spec_of(MomentEncoding::FP8Expand, DType::E5M2), {{0, n}}, "all"},
      {spec_of(MomentEncoding::FP8, DType::E4M3), spec_of(MomentEncoding::FP8, DType::E4M3), {{0, n}}, "all"},
      {spec_of(MomentEncoding::BF16), spec_of(MomentEncoding::BF16), {{0, n}}, "all"},
      {spec_of(MomentEncoding::F32), spec_of(MomentEncoding::F32), {{0, n}}, "all"},
  };
  for (const Case& c : cases) {
    QuantizedMoment m = ops::make_moment(gpu, n, c.m, MemoryCategory::OptimizerState);
    QuantizedMoment v = ops::make_moment(gpu, n, c.v, MemoryCategory::OptimizerState);
    int64_t step = 0;
    for (int i = 0; i < 3; ++i)
      ops::adamw_step_quantized(p, g, m, v, hyper(++step), c.ranges);  // realistic states
    const double ms =
        median_ms(stream, 10, [&] { ops::adamw_step_quantized(p, g, m, v, hyper(++step), c.ranges); });
    // Bytes moved: grad read, param read + write, codes and metadata read + write.
    const double bytes = 12.0 * n + 2.0 * static_cast<double>(m.bytes() + v.bytes());
    const double gbs = bytes / ms / 1e6;
    std::printf(
        "[bw] adamw_step_quantized %lld params, m %s, v %s, decay %s: %.3f ms, %.0f GB/s (%.2f B/param) = "
        "%.0f%% of copy\n",
        static_cast<long long>(n), ops::moment_spec_str(c.m).c_str(), ops::moment_spec_str(c.v).c_str(),
        c.ranges_name, ms, gbs, bytes / n, 100.0 * gbs / copy_gbs);
  }
  {
    Tensor m = ops::zeros(gpu, {n}, DType::F32), v = ops::zeros(gpu, {n}, DType::F32);
    int64_t step = 0;
    const double ms = median_ms(stream, 10, [&] { ops::adamw_step(p, g, m, v, hyper(++step)); });
    const double gbs = 28.0 * n / ms / 1e6;
    std::printf("[bw] reference ops::adamw_step f32: %.3f ms, %.0f GB/s (28 B/param) = %.0f%% of copy\n", ms,
                gbs, 100.0 * gbs / copy_gbs);
  }
#endif
}

// The shape: the 28 weight matrices of 4 Llama-2-7B layers (0.81B parameters), one flat unit per
// layer as the trainer keeps them, FP32 master weights and gradients, groups of 128, weight decay on all.
// Prints the time of one step over the four units (with and without the BF16 compute copy) beside our FP32
// ops::adamw_step over the same units; scripts/bench_adamw_torch.py times torch's fused AdamW on the same
// shapes in the same device command.
TEST_F(CudaQuantizedAdamW, DISABLED_Llama2_7B_FourLayers) {
#ifdef COAT_WITH_CUDA
  cudaStream_t stream = static_cast<cuda::CudaContext&>(*gpu).stream();
  std::printf("device: %s\n", static_cast<cuda::CudaContext&>(*gpu).properties().str().c_str());
  const int64_t d = 4096, f = 11008, layers = 4;
  const int64_t per_layer = 4 * d * d + 3 * d * f;  // q, k, v, o; gate, up, down
  const int64_t n = layers * per_layer;
  double copy_gbs = 0.0;
  {
    Tensor src = ops::zeros(gpu, {per_layer}, DType::F32), dst = ops::zeros(gpu, {per_layer}, DType::F32);
    const double ms = median_ms(stream, 10, [&] {
      COAT_CUDA_CHECK(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), size_t(per_layer) * 4,
                                      cudaMemcpyDeviceToDevice, stream));
    });
    copy_gbs = 8.0 * per_layer / ms / 1e6;
    std::printf("[7b4] D2D cudaMemcpy %.0f MB: %.0f GB/s (read + write)\n", 4.0 * per_layer / 1e6, copy_gbs);
  }
  RandomGenerator rng{7, 0};
  std::vector<Tensor> p, g, w;
  for (int64_t l = 0; l < layers; ++l) {
    p.push_back(Tensor::empty(gpu, {per_layer}, DType::F32));
    g.push_back(Tensor::empty(gpu, {per_layer}, DType::F32));
    w.push_back(Tensor::empty(gpu, {per_layer}, DType::BF16));
    ops::normal_(p.back(), rng, 0.0f, 0.02f);
    ops::normal_(g.back(), rng, 0.0f, 1e-3f);
  }
  const std::vector<DecayRange> all = {{0, per_layer}};
  // A unit's plan: matrices decayed, two norm vectors (4096 each) between them not.
  const std::vector<DecayRange> unit = {{0, 4 * d * d}, {4 * d * d + d, per_layer - d}};
  const MomentSpec ex4 = spec_of(MomentEncoding::FP8Expand, DType::E4M3);
  for (const MomentSpec& spec : {ex4, spec_of(MomentEncoding::FP8, DType::E4M3), spec_of(MomentEncoding::F32)}) {
    std::vector<QuantizedMoment> m, v;
    for (int64_t l = 0; l < layers; ++l) {
      m.push_back(ops::make_moment(gpu, per_layer, spec, MemoryCategory::OptimizerState));
      v.push_back(ops::make_moment(gpu, per_layer, spec, MemoryCategory::OptimizerState));
    }
    int64_t step = 0;
    for (int variant = 0; variant < 3; ++variant) {
      const bool with_copy = variant == 1, ranges = variant == 2;
      auto run = [&] {
        ++step;
        for (int64_t l = 0; l < layers; ++l)
          ops::adamw_step_quantized(p[size_t(l)], g[size_t(l)], m[size_t(l)], v[size_t(l)], hyper(step),
                                    ranges ? unit : all, with_copy ? &w[size_t(l)] : nullptr);
      };
      for (int i = 0; i < 3; ++i) run();
      const double ms = median_ms(stream, 10, run);
      const double bytes =
          (12.0 + (with_copy ? 2.0 : 0.0)) * n + 2.0 * layers * static_cast<double>(m[0].bytes() + v[0].bytes());
      const double gbs = bytes / ms / 1e6;
      std::printf("[7b4] adamw_step_quantized %s%s: %.3f ms, %.2f B/param, %.0f GB/s = %.0f%% of copy\n",
                  ops::moment_spec_str(spec).c_str(),
                  with_copy ? " + bf16 copy" : ranges ? " (decay ranges of a unit)" : "", ms, bytes / n, gbs,
                  100.0 * gbs / copy_gbs);
    }
  }
  {
    std::vector<Tensor> m, v;
    for (int64_t l = 0; l < layers; ++l) {
      m.push_back(ops::zeros(gpu, {per_layer}, DType::F32));
      v.push_back(ops::zeros(gpu, {per_layer}, DType::F32));
    }
    int64_t step = 0;
    const double ms = median_ms(stream, 10, [&] {
      ++step;
      for (int64_t l = 0; l < layers; ++l) ops::adamw_step(p[size_t(l)], g[size_t(l)], m[size_t(l)], v[size_t(l)], hyper(step));
    });
    const double gbs = 28.0 * n / ms / 1e6;
    std::printf("[7b4] ops::adamw_step f32 (per unit): %.3f ms, 28 B/param, %.0f GB/s = %.0f%% of copy\n", ms, gbs,
                100.0 * gbs / copy_gbs);
  }
#endif
}

}  // namespace
}  // namespace coat
