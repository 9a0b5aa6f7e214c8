// CPU reference: softmax cross-entropy with the fused logits' gradient, templated on the element type.
#include "coat/backend/cpu/loss.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "coat/backend/cpu/typed_storage.h"
#include "coat/core/float_formats.h"
#include "coat/ops/loss.h"

namespace coat::cpu {
namespace {


/// max of x[0..n) (n >= 1) over eight independent lanes, so the loop vectorises.
template <typename A>
A row_max(const A* x, int64_t n) {
  A lane[8];
  for (A& l : lane) l = x[0];
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int64_t l = 0; l < 8; ++l) lane[l] = x[j + l] > lane[l] ? x[j + l] : lane[l];
  A m = lane[0];
  for (int64_t l = 1; l < 8; ++l) m = lane[l] > m ? lane[l] : m;
  for (; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

/// sum of x[0..n) in double over four independent partial sums, combined in a fixed order.
template <typename A>
double sum_in_double(const A* x, int64_t n) {
  double part[4] = {0.0, 0.0, 0.0, 0.0};
  int64_t j = 0;
  for (; j + 4 <= n; j += 4)
    for (int64_t l = 0; l < 4; ++l) part[l] += x[j + l];
  for (; j < n; ++j) part[0] += x[j];
  return (part[0] + part[1]) + (part[2] + part[3]);
}

/// The targets as int64, -1 for ignored rows; throws for the first target outside [0, vocab).
std::vector<int64_t> read_targets(const Tensor& targets, int64_t ignore_index, int64_t vocab) {
  const int64_t n = targets.numel();
  std::vector<int64_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t =
        targets.dtype() == DType::I64 ? targets.data<int64_t>()[i] : int64_t{targets.data<int32_t>()[i]};
    if (t == ignore_index) {
      out[i] = -1;
      continue;
    }
    COAT_ARG_CHECK(t >= 0 && t < vocab, "cross_entropy", "target ", t, " at position ", i,
                   " is outside [0, V) with V = ", vocab, " and is not ignore_index (", ignore_index, ")");
    out[i] = t;
  }
  return out;
}

template <typename S>
double cross_entropy_impl(const Tensor& logits, const std::vector<int64_t>& targets, double grad_scale,
                          Tensor& dlogits, int64_t& count) {
  using A = acc_t<S>;
  const int64_t vocab = logits.size(-1);
  const int64_t rows = static_cast<int64_t>(targets.size());
  const S* x = logits.data<S>();
  S* dx = dlogits.defined() ? dlogits.data<S>() : nullptr;
  std::vector<A> row(static_cast<size_t>(vocab)), e(static_cast<size_t>(vocab));
  const S zero = narrow<S>(A(0));
  double loss = 0.0;
  count = 0;
  for (int64_t n = 0; n < rows; ++n) {
    const int64_t t = targets[n];
    if (t < 0) {
      if (dx != nullptr)
        for (int64_t j = 0; j < vocab; ++j) dx[n * vocab + j] = zero;
      continue;
    }
    const S* xr = x + n * vocab;
    for (int64_t j = 0; j < vocab; ++j) row[j] = widen(xr[j]);
    const A m = row_max(row.data(), vocab);
    for (int64_t j = 0; j < vocab; ++j) e[j] = std::exp(row[j] - m);
    const double sum = sum_in_double(e.data(), vocab);
    loss += static_cast<double>(m) + std::log(sum) - static_cast<double>(row[t]);
    ++count;
    if (dx != nullptr) {
      // softmax_j = e_j / sum; the target's entry takes the -1 before scaling.
      const A inv = static_cast<A>(1.0 / sum);
      const A g = static_cast<A>(grad_scale);
      S* dr = dx + n * vocab;
      for (int64_t j = 0; j < vocab; ++j) dr[j] = narrow<S>(e[j] * inv * g);
      dr[t] = narrow<S>((e[t] * inv - A(1)) * g);
    }
  }
  return loss;
}

}  // namespace

void cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, double grad_scale,
                   Tensor& dlogits, Tensor& sums) {
  const std::vector<int64_t> t = read_targets(targets, ignore_index, logits.size(-1));
  double loss = 0.0;
  int64_t count = 0;
  dispatch_storage(logits.dtype(), "cross_entropy", [&](auto s) {
    loss = cross_entropy_impl<decltype(s)>(logits, t, grad_scale, dlogits, count);
  });
  const ops::CrossEntropySums out{loss, static_cast<double>(count), 0.0, -1, 0};
  std::memcpy(sums.data_ptr(), &out, sizeof out);
}

}  // namespace coat::cpu
