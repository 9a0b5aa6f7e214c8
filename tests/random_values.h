// Random test inputs shared by the suites: normal values that are never exactly zero (ops whose outputs are
// compared bit for bit, or divided by, want nonzero inputs), and token batches for the tiny models.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "coat/core/tensor.h"
#include "coat/ops/creation.h"

namespace coat::test {

/// n values of N(mean, scale) from std::mt19937(seed); a value that is exactly 0 becomes `zero`.
inline std::vector<double> nonzero_normal(size_t n, uint32_t seed, double mean = 0.0, double scale = 1.0,
                                          double zero = 0.5) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist(mean, scale);
  std::vector<double> v(n);
  for (double& x : v) {
    x = dist(gen);
    if (x == 0.0) x = zero;
  }
  return v;
}

/// nonzero_normal as a tensor of `shape` and dtype t on ctx.
inline Tensor nonzero_normal_tensor(const ContextPtr& ctx, const Shape& shape, DType t, uint32_t seed,
                                    double mean = 0.0, double scale = 1.0, double zero = 0.5) {
  return ops::from_vector(ctx, shape, t,
                          nonzero_normal(static_cast<size_t>(shape_numel(shape)), seed, mean, scale, zero));
}

/// Token ids and targets [batch, seq] (I32), uniform in [0, vocab): std::mt19937(seed) draws an id, then a
/// target, position by position.
struct TokenBatch {
  Tensor ids, targets;
};
inline TokenBatch random_tokens(const ContextPtr& ctx, int64_t batch, int64_t seq, uint32_t vocab,
                                uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<double> ids(static_cast<size_t>(batch * seq)), targets(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    ids[i] = static_cast<double>(rng() % vocab);
    targets[i] = static_cast<double>(rng() % vocab);
  }
  return {ops::from_vector(ctx, {batch, seq}, DType::I32, ids),
          ops::from_vector(ctx, {batch, seq}, DType::I32, targets)};
}

}  // namespace coat::test
