// Embedding op on the CPU: row lookup for every float dtype and both id types, deterministic accumulating
// backward (checked by F64 finite differences and against a sequential sum), and id range errors.
#include <gtest/gtest.h>

#include "expect_error.h"
#include "finite_difference.h"

#include <cstring>

#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/embedding.h"
#include "coat/ops/runtime.h"

namespace coat {
namespace {

using test::random_values;

ContextPtr cpu() {
  return ops::make_context(Device::cpu());
}

Tensor ids_tensor(const ContextPtr& ctx, const Shape& shape, DType dt, const std::vector<double>& ids) {
  return ops::from_vector(ctx, shape, dt, ids);
}

TEST(EmbeddingOps, PicksRowsExactly) {
  auto ctx = cpu();
  const int64_t vocab = 11, d = 6;
  const auto w = random_values(vocab * d, 1);
  const std::vector<double> ids{3, 0, 10, 3, 7, 1};
  for (DType wt : {DType::F32, DType::F64, DType::BF16})
    for (DType it : {DType::I32, DType::I64}) {
      const Tensor table = ops::from_vector(ctx, {vocab, d}, wt, w);
      const Tensor out = ops::embedding(table, ids_tensor(ctx, {2, 3}, it, ids));
      EXPECT_EQ(out.shape(), Shape({2, 3, d}));
      EXPECT_EQ(out.dtype(), wt);
      const auto rows = ops::to_double_vector(table), got = ops::to_double_vector(out);
      for (size_t n = 0; n < ids.size(); ++n)
        for (int64_t j = 0; j < d; ++j)
          EXPECT_EQ(got[n * d + j], rows[static_cast<size_t>(ids[n]) * d + j]) << dtype_name(wt) << " " << n;
    }
}

TEST(EmbeddingOps, BackwardAccumulatesInPositionOrder) {
  auto ctx = cpu();
  const int64_t vocab = 5, d = 4;
  const std::vector<double> ids{2, 4, 2, 2, 0, 4};
  const auto dy = random_values(ids.size() * d, 2);
  const auto initial = random_values(vocab * d, 3);
  Tensor grad = ops::from_vector(ctx, {vocab, d}, DType::F32, initial);
  ops::embedding_backward(ops::from_vector(ctx, {6, d}, DType::F32, dy),
                          ids_tensor(ctx, {6}, DType::I64, ids), grad);
  // The same sums in float, in position order: identical bits.
  std::vector<float> expected(initial.begin(), initial.end());
  for (size_t n = 0; n < ids.size(); ++n)
    for (int64_t j = 0; j < d; ++j) {
      float& e = expected[static_cast<size_t>(ids[n]) * d + j];
      e = e + static_cast<float>(dy[n * d + j]);
    }
  const float* g = grad.data<float>();
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(g[i], expected[i]) << i;
  // Rows no id picks keep their value.
  for (int64_t j = 0; j < d; ++j) EXPECT_EQ(g[1 * d + j], static_cast<float>(initial[1 * d + j]));
}

TEST(EmbeddingOps, BackwardMatchesFiniteDifferences) {
  auto ctx = cpu();
  const int64_t vocab = 7, d = 3;
  const std::vector<double> ids{6, 1, 1, 3, 6, 6, 0};
  const auto w = random_values(vocab * d, 4);
  const auto proj = random_values(ids.size() * d, 5);
  const Tensor tids = ids_tensor(ctx, {7}, DType::I32, ids);
  auto loss = [&](const std::vector<double>& p) {
    return test::dot(
        proj, ops::to_double_vector(ops::embedding(ops::from_vector(ctx, {vocab, d}, DType::F64, p), tids)));
  };
  Tensor grad = ops::zeros(ctx, {vocab, d}, DType::F64, MemoryCategory::Gradients);
  ops::embedding_backward(ops::from_vector(ctx, {7, d}, DType::F64, proj), tids, grad);
  test::expect_close_normwise(ops::to_double_vector(grad), test::central_difference(loss, w), 1e-6,
                              "dweight");
}

TEST(EmbeddingOps, BackwardTakesLowPrecisionGradients) {
  auto ctx = cpu();
  const std::vector<double> ids{1, 0, 1};
  const auto dy = random_values(3 * 4, 6);
  const Tensor dyb = ops::from_vector(ctx, {3, 4}, DType::BF16, dy);
  Tensor grad = ops::zeros(ctx, {2, 4}, DType::F32);
  ops::embedding_backward(dyb, ids_tensor(ctx, {3}, DType::I32, ids), grad);
  const auto r = ops::to_double_vector(dyb), g = ops::to_double_vector(grad);
  for (int64_t j = 0; j < 4; ++j) {
    EXPECT_EQ(g[j], r[4 + j]);
    EXPECT_EQ(g[4 + j], static_cast<float>(static_cast<float>(r[j]) + static_cast<float>(r[8 + j])));
  }
}

TEST(EmbeddingOps, OutOfRangeIdsAreNamed) {
  auto ctx = cpu();
  const Tensor table = ops::from_vector(ctx, {10, 4}, DType::F32, random_values(40, 7));
  test::expect_error_containing(
      [&] {
        ops::embedding(table, ids_tensor(ctx, {4}, DType::I64, {1, 2, 10, 3}));
      },
      "[embedding] id 10 at position 2 is outside [0, V) with V = 10");
  test::expect_error_containing(
      [&] {
        ops::embedding(table, ids_tensor(ctx, {3}, DType::I32, {0, -1, 3}));
      },
      "id -1 at position 1");
  Tensor grad = ops::zeros(ctx, {10, 4}, DType::F32);
  test::expect_error_containing(
      [&] {
        ops::embedding_backward(ops::full(ctx, {2, 4}, 1.0, DType::F32),
                                ids_tensor(ctx, {2}, DType::I64, {3, 12}), grad);
      },
      "[embedding_backward] id 12 at position 1 is outside [0, V) with V = 10");
  // Nothing was written before the bad id was found.
  for (double g : ops::to_double_vector(grad)) EXPECT_EQ(g, 0.0);
}

TEST(EmbeddingOps, ErrorsNameTheProblem) {
  auto ctx = cpu();
  const Tensor table = ops::from_vector(ctx, {10, 4}, DType::F32, random_values(40, 8));
  const Tensor ids = ids_tensor(ctx, {3}, DType::I64, {1, 2, 3});
  test::expect_error_containing([&] { ops::embedding(table, ops::cast(ids, DType::F32)); },
                                "ids have dtype f32; expected i32 or i64");
  test::expect_error_containing([&] { ops::embedding(table.reshape({40}), ids); },
                                "weight has shape (40); expected [V, D]");
  test::expect_error_containing(
      [&] {
        ops::embedding_backward(ops::full(ctx, {3, 5}, 1.0, DType::F32), ids,
                                ops::zeros(ctx, {10, 4}, DType::F32));
      },
      "dy has shape (3,5); expected (3,4)");
  test::expect_error_containing(
      [&] {
        ops::embedding_backward(ops::full(ctx, {3, 4}, 1.0, DType::F32), ids,
                                ops::zeros(ctx, {10, 4}, DType::BF16));
      },
      "dweight_accum has dtype bf16; expected f32 or f64");
}

}  // namespace
}  // namespace coat
