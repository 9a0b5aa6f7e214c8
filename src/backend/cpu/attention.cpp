// CPU reference: causal GQA attention, templated on the element type. Per (batch, kv head) the keys are
// gathered once into K^T (and V^T for the backward), so the score loop of a query row runs over
// contiguous keys and vectorises; the output and gradient loops run over the contiguous head dimension.
#include "coat/backend/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <thread>
#include <type_traits>
#include <vector>

#include "coat/backend/cpu/typed_storage.h"
#include "coat/core/float_formats.h"

namespace coat::cpu {
namespace {


/// Below this many multiply-adds (B * Hq * Tq * Tk * Dh) one thread does all the work.
constexpr int64_t kParallelWork = int64_t{1} << 20;

struct Dims {
  int64_t b = 0, tq = 0, tk = 0, hq = 0, hkv = 0, dh = 0;
  int64_t group = 1;   // query heads per kv head
  int64_t offset = 0;  // query t sees keys 0 .. offset + t
  int64_t units() const { return b * hkv; }
  int64_t q_index(int64_t bi, int64_t t, int64_t h) const { return ((bi * tq + t) * hq + h) * dh; }
  int64_t kv_index(int64_t bi, int64_t t, int64_t h) const { return ((bi * tk + t) * hkv + h) * dh; }
  int64_t lse_index(int64_t bi, int64_t h, int64_t t) const { return (bi * hq + h) * tq + t; }
};

Dims dims_of(const Tensor& q, const Tensor& k) {
  Dims d;
  d.b = q.size(0);
  d.tq = q.size(1);
  d.hq = q.size(2);
  d.dh = q.size(3);
  d.tk = k.size(1);
  d.hkv = k.size(2);
  d.group = d.hkv == 0 ? 1 : d.hq / d.hkv;
  d.offset = d.tk - d.tq;
  return d;
}

int64_t worker_count(const Dims& d) {
  const int64_t work = d.b * d.hq * d.tq * d.tk * d.dh;
  if (work < kParallelWork) return 1;
  const int64_t hw = std::max<int64_t>(1, std::thread::hardware_concurrency());
  return std::max<int64_t>(1, std::min(hw, d.units()));
}

/// Runs fn(unit, worker) for every unit in [0, units): worker w takes units w, w + workers, ... in order.
/// Units write disjoint outputs, so the result does not depend on `workers`.
template <typename F>
void for_each_unit(int64_t units, int64_t workers, F&& fn) {
  auto run = [&](int64_t w) {
    for (int64_t u = w; u < units; u += workers) fn(u, w);
  };
  std::vector<std::thread> threads;
  try {
    for (int64_t w = 1; w < workers; ++w) threads.emplace_back(run, w);
  } catch (...) {
    for (std::thread& t : threads) t.join();
    throw;
  }
  run(0);
  for (std::thread& t : threads) t.join();
}

/// Per-worker buffers, allocated before the threads start.
template <typename A>
struct Scratch {
  std::vector<A> kt, kr, vt, vr, dk, dv;  // [Dh, Tk] transposed, [Tk, Dh] rows
  std::vector<A> s, p, dp;                // [Tk] per query row
  std::vector<A> qv, dov, acc;            // [Dh]
  Scratch(const Dims& d, bool backward) {
    const auto tkdh = static_cast<size_t>(d.tk * d.dh);
    const auto tk = static_cast<size_t>(d.tk), dh = static_cast<size_t>(d.dh);
    kt.resize(tkdh);
    s.resize(tk);
    qv.resize(dh);
    acc.resize(dh);
    if (backward) {
      kr.resize(tkdh);
      vt.resize(tkdh);
      dk.resize(tkdh);
      dv.resize(tkdh);
      p.resize(tk);
      dp.resize(tk);
      dov.resize(dh);
    } else {
      vr.resize(tkdh);
    }
  }
};

/// s[j] = sum_e qv[e] * kt[e][j] for j < n: an axpy over contiguous keys per head-dimension element.
template <typename A>
void scores(const A* qv, const A* kt, int64_t dh, int64_t tk, int64_t n, A* s) {
  std::fill(s, s + n, A(0));
  for (int64_t e = 0; e < dh; ++e) {
    const A qe = qv[e];
    const A* __restrict krow = kt + e * tk;
    A* __restrict sr = s;
    for (int64_t j = 0; j < n; ++j) sr[j] += qe * krow[j];
  }
}

template <typename S>
void forward_unit(const Dims& d, int64_t unit, const S* q, const S* k, const S* v, acc_t<S> scale, S* out,
                  acc_t<S>* lse, Scratch<acc_t<S>>& w) {
  using A = acc_t<S>;
  const int64_t bi = unit / d.hkv, kvh = unit % d.hkv;
  for (int64_t j = 0; j < d.tk; ++j) {
    const S* kj = k + d.kv_index(bi, j, kvh);
    const S* vj = v + d.kv_index(bi, j, kvh);
    for (int64_t e = 0; e < d.dh; ++e) {
      w.kt[e * d.tk + j] = widen(kj[e]);
      w.vr[j * d.dh + e] = widen(vj[e]);
    }
  }
  A* s = w.s.data();
  A* acc = w.acc.data();
  for (int64_t g = 0; g < d.group; ++g) {
    const int64_t h = kvh * d.group + g;
    for (int64_t i = 0; i < d.tq; ++i) {
      const int64_t n = std::min(d.offset + i + 1, d.tk);
      const S* qi = q + d.q_index(bi, i, h);
      for (int64_t e = 0; e < d.dh; ++e) w.qv[e] = widen(qi[e]) * scale;
      scores(w.qv.data(), w.kt.data(), d.dh, d.tk, n, s);
      A m = s[0];
      for (int64_t j = 1; j < n; ++j) m = std::max(m, s[j]);
      A sum = 0;
      for (int64_t j = 0; j < n; ++j) {
        s[j] = std::exp(s[j] - m);
        sum += s[j];
      }
      std::fill(acc, acc + d.dh, A(0));
      for (int64_t j = 0; j < n; ++j) {
        const A pj = s[j];
        const A* __restrict vrow = w.vr.data() + j * d.dh;
        for (int64_t e = 0; e < d.dh; ++e) acc[e] += pj * vrow[e];
      }
      const A inv = A(1) / sum;
      S* oi = out + d.q_index(bi, i, h);
      for (int64_t e = 0; e < d.dh; ++e) oi[e] = narrow<S>(acc[e] * inv);
      lse[d.lse_index(bi, h, i)] = m + std::log(sum);
    }
  }
}

template <typename S>
void backward_unit(const Dims& d, int64_t unit, const S* dout, const S* q, const S* k, const S* v,
                   const S* out, const acc_t<S>* lse, acc_t<S> scale, S* dq, S* dk, S* dv,
                   Scratch<acc_t<S>>& w) {
  using A = acc_t<S>;
  const int64_t bi = unit / d.hkv, kvh = unit % d.hkv;
  for (int64_t j = 0; j < d.tk; ++j) {
    const S* kj = k + d.kv_index(bi, j, kvh);
    const S* vj = v + d.kv_index(bi, j, kvh);
    for (int64_t e = 0; e < d.dh; ++e) {
      const A ke = widen(kj[e]);
      w.kt[e * d.tk + j] = ke;
      w.kr[j * d.dh + e] = ke;
      w.vt[e * d.tk + j] = widen(vj[e]);
    }
  }
  std::fill(w.dk.begin(), w.dk.end(), A(0));
  std::fill(w.dv.begin(), w.dv.end(), A(0));
  A* s = w.s.data();
  A* p = w.p.data();
  A* ds = w.dp.data();
  A* acc = w.acc.data();
  const A* qv = w.qv.data();
  const A* dov = w.dov.data();
  for (int64_t g = 0; g < d.group; ++g) {
    const int64_t h = kvh * d.group + g;
    for (int64_t i = 0; i < d.tq; ++i) {
      const int64_t n = std::min(d.offset + i + 1, d.tk);
      const int64_t qi = d.q_index(bi, i, h);
      A delta = 0;  // sum_e dout * out: the softmax backward's row term
      for (int64_t e = 0; e < d.dh; ++e) {
        w.qv[e] = widen(q[qi + e]) * scale;
        w.dov[e] = widen(dout[qi + e]);
        delta += w.dov[e] * widen(out[qi + e]);
      }
      scores(qv, w.kt.data(), d.dh, d.tk, n, s);
      const A row_lse = lse[d.lse_index(bi, h, i)];
      for (int64_t j = 0; j < n; ++j) p[j] = std::exp(s[j] - row_lse);
      scores(dov, w.vt.data(), d.dh, d.tk, n, ds);  // dp[j] = dout . v_j
      for (int64_t j = 0; j < n; ++j) ds[j] = p[j] * (ds[j] - delta);
      std::fill(acc, acc + d.dh, A(0));
      for (int64_t j = 0; j < n; ++j) {
        const A dsj = ds[j], pj = p[j];
        const A* __restrict krow = w.kr.data() + j * d.dh;
        A* __restrict dkrow = w.dk.data() + j * d.dh;
        A* __restrict dvrow = w.dv.data() + j * d.dh;
        for (int64_t e = 0; e < d.dh; ++e) {
          acc[e] += dsj * krow[e];
          dkrow[e] += dsj * qv[e];
          dvrow[e] += pj * dov[e];
        }
      }
      for (int64_t e = 0; e < d.dh; ++e) dq[qi + e] = narrow<S>(acc[e] * scale);
    }
  }
  for (int64_t j = 0; j < d.tk; ++j) {
    const int64_t kj = d.kv_index(bi, j, kvh);
    for (int64_t e = 0; e < d.dh; ++e) {
      dk[kj + e] = narrow<S>(w.dk[j * d.dh + e]);
      dv[kj + e] = narrow<S>(w.dv[j * d.dh + e]);
    }
  }
}

}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale, Tensor& out,
                       Tensor& lse) {
  const Dims d = dims_of(q, k);
  if (d.units() == 0 || d.tq == 0 || d.dh == 0) {
    return;
  }
  dispatch_storage(q.dtype(), "attention_forward", [&](auto tag) {
    using S = decltype(tag);
    using A = acc_t<S>;
    const int64_t workers = worker_count(d);
    std::vector<Scratch<A>> scratch;
    scratch.reserve(static_cast<size_t>(workers));
    for (int64_t w = 0; w < workers; ++w) scratch.emplace_back(d, false);
    for_each_unit(d.units(), workers, [&](int64_t unit, int64_t w) {
      forward_unit<S>(d, unit, q.data<S>(), k.data<S>(), v.data<S>(), static_cast<A>(scale), out.data<S>(),
                      lse.data<A>(), scratch[w]);
    });
  });
}

void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse, double scale, Tensor& dq, Tensor& dk,
                        Tensor& dv) {
  const Dims d = dims_of(q, k);
  if (d.units() == 0 || d.tk == 0 || d.dh == 0) return;
  dispatch_storage(q.dtype(), "attention_backward", [&](auto tag) {
    using S = decltype(tag);
    using A = acc_t<S>;
    const int64_t workers = worker_count(d);
    std::vector<Scratch<A>> scratch;
    scratch.reserve(static_cast<size_t>(workers));
    for (int64_t w = 0; w < workers; ++w) scratch.emplace_back(d, true);
    for_each_unit(d.units(), workers, [&](int64_t unit, int64_t w) {
      backward_unit<S>(d, unit, dout.data<S>(), q.data<S>(), k.data<S>(), v.data<S>(), out.data<S>(),
                       lse.data<A>(), static_cast<A>(scale), dq.data<S>(), dk.data<S>(), dv.data<S>(),
                       scratch[w]);
    });
  });
}

}  // namespace coat::cpu
