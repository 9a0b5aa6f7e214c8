// CUDA embedding, cross-entropy, AdamW and sum of squares (through coat::ops) against the CPU backend on
// random, non-zero inputs, plus determinism and the errors found on the device.
//
// Tolerances:
// - embedding forward and backward: exact bytes (a row copy; the backward adds each (id, column)'s rows in
//   position order, the CPU's sequential order, one IEEE add each).
// - adamw_step: exact bytes (both backends run adamw_math::adamw_update, one rounded float op at a time).
// - cross_entropy: the device's expf differs from glibc's by up to 2 ulp and the sum of exponentials is
//   formed online (thread-local max, rescaled in double), so: loss_sum within 2e-6 per counted row (f32,
//   bf16 logits) or 1e-12 (f64); f32 dlogits within 2e-6 relative + 1e-7 * |grad_scale|; bf16 dlogits within
//   one bf16 ulp (2^-7 relative); f64 within 1e-13 relative. count exact.
// - sum_squares: double sums in another order: 1e-12 relative; bit-identical run to run.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "coat/core/error.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/embedding.h"
#include "coat/ops/loss.h"
#include "coat/ops/optimizer.h"
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

class CudaTrainOps : public test::CudaTest {};

std::vector<double> normal_values(size_t n, uint32_t seed, double scale = 1.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist(0.0, scale);
  std::vector<double> v(n);
  for (double& x : v) {
    x = dist(gen);
    if (x == 0.0) x = scale;  // non-zero
  }
  return v;
}

std::vector<double> random_ids(size_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int64_t> dist(0, vocab - 1);
  std::vector<double> v(n);
  for (double& x : v) x = static_cast<double>(dist(gen));
  return v;
}

/// Runs fn and expects an InvalidArgument whose message contains needle.
template <typename Fn>
void expect_invalid_argument(Fn&& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no exception; expected an InvalidArgument containing: " << needle;
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  } catch (const Error& e) {
    ADD_FAILURE() << "not an InvalidArgument: " << e.what();
  }
}

// ---- embedding ----

TEST_F(CudaTrainOps, EmbeddingForwardIsByteIdenticalToCpu) {
  for (DType wt : {DType::F32, DType::BF16, DType::F64}) {
    for (DType it : {DType::I32, DType::I64}) {
      for (int64_t d : {1, 37, 256}) {  // 2-byte .. 16-byte accesses
        const int64_t vocab = 97;
        Tensor w = ops::from_vector(cpu, {vocab, d}, wt, normal_values(size_t(vocab * d), 1));
        Tensor ids = ops::from_vector(cpu, {3, 41}, it, random_ids(3 * 41, vocab, 2));
        Tensor ref = ops::embedding(w, ids);
        Tensor got = ops::embedding(ops::to(w, gpu), ops::to(ids, gpu));
        EXPECT_EQ(got.shape(), ref.shape());
        EXPECT_EQ(got.device(), Device::cuda(0));
        EXPECT_EQ(ops::to_bytes(got), ops::to_bytes(ref)) << dtype_name(wt) << " " << dtype_name(it) << " D=" << d;
      }
    }
  }
  // A table view that starts at an odd element (unaligned rows) still copies the right bytes.
  Tensor big = ops::from_vector(cpu, {50 * 8 + 1}, DType::BF16, normal_values(401, 3));
  Tensor w = big.slice(0, 1, 401).reshape({50, 8});
  Tensor ids = ops::from_vector(cpu, {64}, DType::I64, random_ids(64, 50, 4));
  Tensor wg = ops::to(big, gpu).slice(0, 1, 401).reshape({50, 8});
  EXPECT_EQ(ops::to_bytes(ops::embedding(wg, ops::to(ids, gpu))), ops::to_bytes(ops::embedding(w, ids)));
}

TEST_F(CudaTrainOps, EmbeddingForwardReportsTheFirstBadId) {
  Tensor w = ops::to(ops::from_vector(cpu, {50, 16}, DType::F32, normal_values(800, 5)), gpu);
  for (DType it : {DType::I32, DType::I64}) {
    std::vector<double> v = random_ids(20, 50, 6);
    v[9] = 77;
    v[4] = -3;
    Tensor ids = ops::to(ops::from_vector(cpu, {20}, it, v), gpu);
    expect_invalid_argument([&] { ops::embedding(w, ids); },
                            "[embedding] id -3 at position 4 is outside [0, V) with V = 50");
  }
  std::vector<double> v(10, 1.0);
  v[7] = static_cast<double>(int64_t{1} << 40);
  Tensor ids = ops::to(ops::from_vector(cpu, {10}, DType::I64, v), gpu);
  expect_invalid_argument([&] { ops::embedding(w, ids); }, "id 1099511627776 at position 7");
  // The context is still usable afterwards.
  Tensor ok = ops::to(ops::from_vector(cpu, {2}, DType::I32, std::vector<double>{3, 49}), gpu);
  EXPECT_EQ(ops::embedding(w, ok).shape(), (Shape{2, 16}));
}

TEST_F(CudaTrainOps, EmbeddingBackwardIsBitIdenticalToCpuAndDeterministic) {
  for (DType gt : {DType::F32, DType::F64}) {
    for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
      for (DType it : {DType::I32, DType::I64}) {
        const int64_t vocab = 300, d = 300, n = 4000;
        // Ids from a few hot values and a long tail: runs of one to ~1000 positions, many ids unused.
        std::vector<double> idv = random_ids(size_t(n), vocab, 7);
        for (size_t i = 0; i < idv.size(); i += 3) idv[i] = static_cast<double>(int64_t(idv[i]) % 4);
        Tensor ids = ops::from_vector(cpu, {2, n / 2}, it, idv);
        Tensor dy = ops::from_vector(cpu, {2, n / 2, d}, dt, normal_values(size_t(n * d), 8));
        Tensor acc_cpu = ops::from_vector(cpu, {vocab, d}, gt, normal_values(size_t(vocab * d), 9, 0.5));
        Tensor acc_gpu = ops::to(acc_cpu, gpu);
        Tensor acc_gpu2 = ops::to(acc_cpu, gpu);
        const Tensor ids_g = ops::to(ids, gpu), dy_g = ops::to(dy, gpu);
        ops::embedding_backward(dy, ids, acc_cpu);
        ops::embedding_backward(dy_g, ids_g, acc_gpu);
        ops::embedding_backward(dy_g, ids_g, acc_gpu2);
        const auto expected = ops::to_bytes(acc_cpu);
        EXPECT_EQ(ops::to_bytes(acc_gpu), expected) << dtype_name(gt) << " += " << dtype_name(dt) << " ids "
                                                    << dtype_name(it);
        EXPECT_EQ(ops::to_bytes(acc_gpu2), expected) << "second run differs";
      }
    }
  }
}

TEST_F(CudaTrainOps, EmbeddingBackwardChecksIdsBeforeWriting) {
  Tensor acc = ops::to(ops::from_vector(cpu, {10, 4}, DType::F32, normal_values(40, 10)), gpu);
  const auto before = ops::to_bytes(acc);
  std::vector<double> idv{1, 2, 3, 10, 4, -1};
  Tensor ids = ops::to(ops::from_vector(cpu, {6}, DType::I32, idv), gpu);
  Tensor dy = ops::to(ops::from_vector(cpu, {6, 4}, DType::F32, normal_values(24, 11)), gpu);
  expect_invalid_argument([&] { ops::embedding_backward(dy, ids, acc); },
                          "[embedding_backward] id 10 at position 3 is outside [0, V) with V = 10");
  EXPECT_EQ(ops::to_bytes(acc), before);
}

// ---- cross-entropy ----

constexpr int64_t kIgnore = -100;

struct CeCase {
  DType dtype;
  DType target_dtype;
  int64_t rows, vocab;
};

TEST_F(CudaTrainOps, CrossEntropyMatchesCpu) {
  const double grad_scale = 0.0123;
  // Small rows (one 256-thread block, read twice), 8-96 KB rows (512 threads, cached in shared memory),
  // long rows (read twice); vectorised (V % (16 / element size) == 0) and element-wise.
  for (const CeCase& c : {CeCase{DType::F32, DType::I64, 67, 37}, CeCase{DType::F32, DType::I32, 33, 1000},
                          CeCase{DType::BF16, DType::I64, 67, 37}, CeCase{DType::BF16, DType::I32, 64, 32000},
                          CeCase{DType::BF16, DType::I64, 40, 5001}, CeCase{DType::F32, DType::I32, 20, 4096},
                          CeCase{DType::F64, DType::I64, 21, 1001}, CeCase{DType::F64, DType::I32, 9, 2001},
                          CeCase{DType::F32, DType::I64, 16, 32000}}) {
    std::vector<double> tv = random_ids(size_t(c.rows), c.vocab, 12);
    for (size_t i = 1; i < tv.size(); i += 5) tv[i] = static_cast<double>(kIgnore);
    Tensor logits = ops::from_vector(cpu, {c.rows, c.vocab}, c.dtype, normal_values(size_t(c.rows * c.vocab), 13, 3.0));
    Tensor targets = ops::from_vector(cpu, {c.rows}, c.target_dtype, tv);
    const ops::CrossEntropyResult ref_result = ops::cross_entropy(logits, targets, kIgnore, grad_scale);
    const ops::CrossEntropyResult got_result =
        ops::cross_entropy(ops::to(logits, gpu), ops::to(targets, gpu), kIgnore, grad_scale);
    const ops::CrossEntropyValues ref = ref_result.read(), got = got_result.read();
    const std::string what = std::string(dtype_name(c.dtype)) + " " + std::to_string(c.rows) + "x" +
                             std::to_string(c.vocab);
    EXPECT_EQ(got.count, ref.count) << what;
    const double loss_tol = c.dtype == DType::F64 ? 1e-12 * ref.count : 2e-6 * ref.count;
    EXPECT_NEAR(got.loss_sum, ref.loss_sum, loss_tol) << what;
    ASSERT_EQ(got_result.dlogits.device(), Device::cuda(0));
    ASSERT_EQ(got_result.dlogits.dtype(), c.dtype);
    const std::vector<double> a = ops::to_double_vector(got_result.dlogits), b = ops::to_double_vector(ref_result.dlogits);
    ASSERT_EQ(a.size(), b.size());
    const double rel = c.dtype == DType::F64 ? 1e-13 : c.dtype == DType::BF16 ? 1.0 / 128 : 2e-6;
    const double abs = c.dtype == DType::F64 ? 1e-16 : 1e-7 * grad_scale;
    double max_rel = 0.0;
    size_t differing = 0, bad = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      const double diff = std::fabs(a[i] - b[i]);
      if (diff != 0.0) ++differing;
      if (b[i] != 0.0) max_rel = std::max(max_rel, diff / std::fabs(b[i]));
      if (diff > rel * std::fabs(b[i]) + abs && bad++ < 5)
        ADD_FAILURE() << what << " dlogits[" << i << "] = " << a[i] << " vs cpu " << b[i];
    }
    for (size_t r = 1; r < size_t(c.rows); r += 5)
      for (int64_t j = 0; j < c.vocab; ++j) ASSERT_EQ(a[r * size_t(c.vocab) + size_t(j)], 0.0) << "ignored row";
    std::printf("[ ce %s ] loss gpu %.17g cpu %.17g (diff %.3g, %lld rows); dlogits: %zu of %zu differ, max rel %.3g\n",
                what.c_str(), got.loss_sum, ref.loss_sum, got.loss_sum - ref.loss_sum,
                static_cast<long long>(ref.count), differing, a.size(), max_rel);
  }
}

TEST_F(CudaTrainOps, CrossEntropyIsDeterministicAndGradientFree) {
  const int64_t rows = 100, vocab = 5000;
  Tensor logits = ops::to(ops::from_vector(cpu, {4, rows / 4, vocab}, DType::BF16,
                                           normal_values(size_t(rows * vocab), 14, 2.0)), gpu);
  Tensor targets = ops::to(ops::from_vector(cpu, {4, rows / 4}, DType::I32, random_ids(size_t(rows), vocab, 15)), gpu);
  const ops::CrossEntropyResult a = ops::cross_entropy(logits, targets, kIgnore, 0.5);
  const ops::CrossEntropyResult b = ops::cross_entropy(logits, targets, kIgnore, 0.5);
  const ops::CrossEntropyResult c = ops::cross_entropy(logits, targets, kIgnore, 0.5, /*compute_grad=*/false);
  const ops::CrossEntropyValues av = a.read(), bv = b.read(), cv = c.read();
  EXPECT_EQ(a.dlogits.shape(), logits.shape());
  EXPECT_EQ(std::memcmp(&av.loss_sum, &bv.loss_sum, sizeof(double)), 0);
  EXPECT_EQ(std::memcmp(&av.loss_sum, &cv.loss_sum, sizeof(double)), 0);
  EXPECT_EQ(av.count, rows);
  EXPECT_EQ(cv.count, rows);
  EXPECT_FALSE(c.dlogits.defined());
  EXPECT_EQ(ops::to_bytes(a.dlogits), ops::to_bytes(b.dlogits));
  // All rows ignored: loss 0, count 0, gradient all zero.
  Tensor ignored = ops::to(ops::full(cpu, {4, rows / 4}, double(kIgnore), DType::I64), gpu);
  const ops::CrossEntropyResult z = ops::cross_entropy(logits, ignored, kIgnore, 1.0);
  EXPECT_EQ(z.read().loss_sum, 0.0);
  EXPECT_EQ(z.read().count, 0);
  const std::vector<double> dz = ops::to_double_vector(z.dlogits);
  EXPECT_TRUE(std::all_of(dz.begin(), dz.end(), [](double x) { return x == 0.0; }));
}

TEST_F(CudaTrainOps, CrossEntropyReportsTheFirstBadTarget) {
  Tensor logits = ops::to(ops::from_vector(cpu, {6, 37}, DType::F32, normal_values(6 * 37, 16)), gpu);
  for (DType it : {DType::I32, DType::I64}) {
    Tensor targets =
        ops::to(ops::from_vector(cpu, {6}, it, std::vector<double>{1, double(kIgnore), 2, 1000, -5, 3}), gpu);
    expect_invalid_argument([&] { ops::cross_entropy(logits, targets, kIgnore, 1.0).read(); },
                            "[cross_entropy] target 1000 at position 3 is outside [0, V) with V = 37 and is not "
                            "ignore_index (-100)");
    expect_invalid_argument([&] { ops::cross_entropy(logits, targets, kIgnore, 1.0, false).read(); }, "target 1000");
  }
}

// ---- AdamW ----

TEST_F(CudaTrainOps, AdamWIsBitIdenticalToCpu) {
  const int64_t n = (int64_t{1} << 20) + 3;  // a float4 body and a scalar tail
  // Offset 0: the float4 path; offset 1: the same update through the scalar path (unaligned views).
  for (int64_t offset : {0, 1}) {
    auto make = [&](uint32_t seed, double scale, bool square) {
      std::vector<double> v = normal_values(size_t(n + offset), seed, scale);
      if (square)
        for (double& x : v) x = x * x;
      return ops::from_vector(cpu, {n + offset}, DType::F32, v);
    };
    Tensor p_cpu = make(20, 1.0, false), m_cpu = make(21, 1e-3, false), v_cpu = make(22, 1e-3, true);
    Tensor p_all = ops::to(p_cpu, gpu), m_all = ops::to(m_cpu, gpu), v_all = ops::to(v_cpu, gpu);
    Tensor p_c = p_cpu.slice(0, offset, n + offset), m_c = m_cpu.slice(0, offset, n + offset),
           v_c = v_cpu.slice(0, offset, n + offset);
    Tensor p_g = p_all.slice(0, offset, n + offset), m_g = m_all.slice(0, offset, n + offset),
           v_g = v_all.slice(0, offset, n + offset);
    for (int64_t step = 1; step <= 5; ++step) {
      Tensor g_cpu = make(static_cast<uint32_t>(30 + step), 0.02, false).slice(0, offset, n + offset);
      Tensor g_gpu = ops::to(g_cpu, gpu);
      if (offset == 1) {  // keep the gradient unaligned too
        Tensor g_all = ops::zeros(gpu, {n + 1}, DType::F32);
        Tensor view = g_all.slice(0, 1, n + 1);
        ops::copy_(view, g_gpu);
        g_gpu = view;
      }
      ops::AdamWHyper h;
      h.lr = 1e-3f;
      h.weight_decay = 0.1f;
      h.grad_scale = 0.37f;
      h.step = step == 5 ? 1000 : step;
      ops::adamw_step(p_c, g_cpu, m_c, v_c, h);
      ops::adamw_step(p_g, g_gpu, m_g, v_g, h);
      ASSERT_EQ(ops::to_bytes(p_g), ops::to_bytes(p_c)) << "param, step " << step << ", offset " << offset;
      ASSERT_EQ(ops::to_bytes(m_g), ops::to_bytes(m_c)) << "exp_avg, step " << step;
      ASSERT_EQ(ops::to_bytes(v_g), ops::to_bytes(v_c)) << "exp_avg_sq, step " << step;
    }
  }
}

// ---- sum of squares ----

TEST_F(CudaTrainOps, SumSquaresMatchesCpuAndIsDeterministic) {
  for (DType t : {DType::F32, DType::BF16, DType::F16, DType::F64, DType::E4M3, DType::E5M2}) {
    for (int64_t n : {int64_t{1}, int64_t{7}, (int64_t{1} << 20) + 5}) {
      Tensor x = ops::from_vector(cpu, {n}, t, normal_values(size_t(n), 40, 2.0));
      const double ref = ops::sum_squares(x).item();
      Tensor xg = ops::to(x, gpu);
      Tensor a = ops::sum_squares(xg), b = ops::sum_squares(xg);
      ASSERT_EQ(a.device(), Device::cuda(0));
      ASSERT_EQ(a.dtype(), DType::F64);
      ASSERT_EQ(a.numel(), 1);
      const double got = ops::to_double_vector(a)[0];
      EXPECT_NEAR(got, ref, 1e-12 * ref) << dtype_name(t) << " n=" << n;
      EXPECT_EQ(ops::to_bytes(a), ops::to_bytes(b)) << "not deterministic: " << dtype_name(t);
    }
  }
  // A strided view (made contiguous by the op) and an empty tensor.
  Tensor m = ops::from_vector(cpu, {300, 7}, DType::F32, normal_values(2100, 41));
  Tensor mt = m.transpose(0, 1).slice(0, 1, 6);
  EXPECT_NEAR(ops::to_double_vector(ops::sum_squares(ops::to(m, gpu).transpose(0, 1).slice(0, 1, 6)))[0],
              ops::sum_squares(mt).item(), 1e-12 * ops::sum_squares(mt).item());
  EXPECT_EQ(ops::to_double_vector(ops::sum_squares(ops::zeros(gpu, {0}, DType::BF16)))[0], 0.0);
}

// ---- timing (run with --gtest_also_run_disabled_tests) ----

#ifdef COAT_WITH_CUDA
using test::median_ms;
#endif

TEST_F(CudaTrainOps, DISABLED_Bandwidth) {
#ifdef COAT_WITH_CUDA
  cudaStream_t stream = static_cast<cuda::CudaContext&>(*gpu).stream();
  std::printf("device: %s\n", static_cast<cuda::CudaContext&>(*gpu).properties().str().c_str());
  RandomGenerator rng{1, 0};
  const int64_t n = 200'000'000;
  // Copy bandwidth: one device-to-device copy of n floats (read + write = 8 bytes per float).
  Tensor src = ops::zeros(gpu, {n}, DType::F32), dst = ops::zeros(gpu, {n}, DType::F32);
  const double copy_ms = median_ms(stream, 10, [&] {
    COAT_CUDA_CHECK(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), size_t(n) * 4, cudaMemcpyDeviceToDevice, stream));
  });
  const double copy_gbs = 8.0 * n / copy_ms / 1e6;
  std::printf("[bw] D2D cudaMemcpy %.0f MB: %.3f ms, %.0f GB/s (read + write)\n", 4.0 * n / 1e6, copy_ms, copy_gbs);
  src = Tensor();
  dst = Tensor();
  {
    Tensor p = Tensor::empty(gpu, {n}, DType::F32), g = Tensor::empty(gpu, {n}, DType::F32);
    Tensor m = ops::zeros(gpu, {n}, DType::F32), v = ops::zeros(gpu, {n}, DType::F32);
    ops::normal_(p, rng, 0.0f, 1.0f);
    ops::normal_(g, rng, 0.0f, 0.01f);
    ops::AdamWHyper h;
    h.lr = 1e-4f;
    h.weight_decay = 0.1f;
    int64_t step = 0;
    const double ms = median_ms(stream, 10, [&] {
      h.step = ++step;
      ops::adamw_step(p, g, m, v, h);
    });
    const double gbs = 28.0 * n / ms / 1e6;
    std::printf("[bw] adamw_step %lld params f32: %.3f ms, %.0f GB/s (28 B/param) = %.0f%% of copy\n",
                static_cast<long long>(n), ms, gbs, 100.0 * gbs / copy_gbs);
    const double ss_ms = median_ms(stream, 10, [&] { ops::sum_squares(g); });
    const double ss_gbs = 4.0 * n / ss_ms / 1e6;
    std::printf("[bw] sum_squares %lld f32: %.3f ms, %.0f GB/s read = %.0f%% of copy\n", static_cast<long long>(n),
                ss_ms, ss_gbs, 100.0 * ss_gbs / copy_gbs);
  }
  {
    const int64_t rows = 16384, vocab = 32000;
    Tensor logits32 = Tensor::empty(gpu, {rows, vocab}, DType::F32);
    ops::normal_(logits32, rng, 0.0f, 2.0f);
    Tensor logits = ops::cast(logits32, DType::BF16);
    logits32 = Tensor();
    Tensor targets = ops::to(ops::from_vector(cpu, {rows}, DType::I32, random_ids(size_t(rows), vocab, 50)), gpu);
    const double ms = median_ms(stream, 10, [&] { ops::cross_entropy(logits, targets, kIgnore, 1.0 / rows); });
    const double bytes = 2.0 * rows * vocab;
    std::printf("[bw] cross_entropy %lldx%lld bf16 (loss + dlogits): %.3f ms; %.0f GB/s counting 1 read + 1 write "
                "(%.0f%% of copy), %.0f GB/s counting the 2 reads + 1 write done\n",
                static_cast<long long>(rows), static_cast<long long>(vocab), ms, 2 * bytes / ms / 1e6,
                100.0 * (2 * bytes / ms / 1e6) / copy_gbs, 3 * bytes / ms / 1e6);
    const double ms_nograd =
        median_ms(stream, 10, [&] { ops::cross_entropy(logits, targets, kIgnore, 1.0 / rows, false); });
    std::printf("[bw] cross_entropy loss only: %.3f ms, %.0f GB/s (1 read)\n", ms_nograd, bytes / ms_nograd / 1e6);
  }
  {
    // A row too long for shared memory (100 KB): the gradient pass reads the logits again.
    const int64_t rows = 8192, vocab = 50304;
    Tensor logits = Tensor::empty(gpu, {rows, vocab}, DType::F32);
    ops::normal_(logits, rng, 0.0f, 2.0f);
    logits = ops::cast(logits, DType::BF16);
    Tensor targets = ops::to(ops::from_vector(cpu, {rows}, DType::I64, random_ids(size_t(rows), vocab, 52)), gpu);
    const double ms = median_ms(stream, 10, [&] { ops::cross_entropy(logits, targets, kIgnore, 1.0 / rows); });
    const double bytes = 2.0 * rows * vocab;
    std::printf("[bw] cross_entropy %lldx%lld bf16 (uncached rows): %.3f ms; %.0f GB/s counting 1 read + 1 write, "
                "%.0f GB/s counting 2 reads + 1 write\n",
                static_cast<long long>(rows), static_cast<long long>(vocab), ms, 2 * bytes / ms / 1e6,
                3 * bytes / ms / 1e6);
  }
  {
    const int64_t tokens = 16384, vocab = 32000, d = 4096;
    Tensor ids = ops::to(ops::from_vector(cpu, {tokens}, DType::I32, random_ids(size_t(tokens), vocab, 51)), gpu);
    Tensor w = Tensor::empty(gpu, {vocab, d}, DType::BF16);
    ops::fill_(w, 0.5);
    const double fwd_ms = median_ms(stream, 10, [&] { ops::embedding(w, ids); });
    std::printf("[bw] embedding fwd %lld x %lld bf16: %.3f ms, %.0f GB/s (read + write rows)\n",
                static_cast<long long>(tokens), static_cast<long long>(d), fwd_ms, 4.0 * tokens * d / fwd_ms / 1e6);
    Tensor dy = Tensor::empty(gpu, {tokens, d}, DType::BF16);
    ops::fill_(dy, 0.25);
    Tensor acc = ops::zeros(gpu, {vocab, d}, DType::F32, MemoryCategory::Gradients);
    const double bwd_ms = median_ms(stream, 10, [&] { ops::embedding_backward(dy, ids, acc); });
    std::printf("[bw] embedding bwd %lld x %lld bf16 -> f32 [%lld, %lld]: %.3f ms\n", static_cast<long long>(tokens),
                static_cast<long long>(d), static_cast<long long>(vocab), static_cast<long long>(d), bwd_ms);
  }
#endif
}

}  // namespace
}  // namespace coat
