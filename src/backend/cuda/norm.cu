// CUDA kernels: RMSNorm and LayerNorm (no affine) over the last dimension, forward and backward, then
// their launchers. One block per row on a persistent grid (as many blocks as fit on the device at once);
// each thread keeps up to kCache 16-byte vectors of its row in registers between the reduction and the
// output pass (longer rows are read a second time, from L1/L2); the forward kernels load the block's next
// row while they reduce and write the current one. Row sums are float (double for f64) block
// reductions in a fixed order. The element-wise formulas are the CPU twin's, with the multiplications and
// subtractions kept unfused (__fmul_rn, ...) so that the two differ only through the row sums.
// On request the forward kernels also write each output row's max |y| (the per-row maxima that per-tensor
// FP8 scales are then taken from): amax keys folded while the row is stored, one block reduction per row.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/device_vector.cuh"
#include "coat/backend/cuda/launch.h"
#include "coat/backend/cuda/norm.h"
#include "coat/backend/cuda/pack_source.cuh"
#include "coat/backend/cuda/row_max.cuh"
#include "coat/backend/quantize_math.h"

namespace coat::cuda {
namespace {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;
/// Threads per block of the LayerNorm backward (x and dy cached: 2 vectors each within 64 registers).
constexpr int kMaxThreads = 1024;
/// Threads per block of the forward kernels, which keep the next row's vectors in flight besides the
/// current row's: with 2 cached vectors within 64 registers (two blocks of 512 per SM), with 4 (long rows)
/// within 128.
constexpr int kMaxForwardThreads = 512;
/// The RMSNorm backward keeps x, dy, weight and the weight-gradient partials in registers: at most 512
/// threads, so that 128 registers per thread are available.
constexpr int kMaxBackwardThreads = 512;
constexpr int kMaxWarps = kMaxThreads / kWarp;
/// The dweight reduction: a block of 32 columns x kReduceSlices slices of the partial rows.
constexpr int kReduceSlices = 8;

/// Sums each of v[0..N) over the block in a fixed order (butterfly within warps, then warp 0's partials
/// in warp order); every thread receives the sums. `red` is the kernel's __shared__ [kMaxWarps][N].
template <typename A, int N>
__device__ inline void block_sum(A (&v)[N], A (*red)[N]) {
#pragma unroll
  for (int k = 0; k < N; ++k) {
#pragma unroll
    for (int offset = kWarp / 2; offset > 0; offset /= 2) v[k] += __shfl_xor_sync(kFullMask, v[k], offset);
  }
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  __syncthreads();  // the previous row's readers of red are done
  if (lane == 0) {
#pragma unroll
    for (int k = 0; k < N; ++k) red[warp][k] = v[k];
  }
  __syncthreads();
  const int warps = blockDim.x / kWarp;
#pragma unroll
  for (int k = 0; k < N; ++k) {
    A s = red[0][k];
    for (int i = 1; i < warps; ++i) s += red[i][k];
    v[k] = s;
  }
}

/// 1 / sqrt(sum / d + eps) in double, rounded once to A (the CPU's formula, from a float sum).
template <typename A>
__device__ inline A inverse_root(A sum, int64_t d, double eps) {
  return static_cast<A>(1.0 / sqrt(static_cast<double>(sum) / static_cast<double>(d) + eps));
}

/// a / b without IEEE division's slow-path call (2 float ulps; exact division for double): for the
/// statistics' weights, where that error is far below the float sums'.
__device__ inline float div_approx(float a, float b) { return __fdividef(a, b); }
__device__ inline double div_approx(double a, double b) { return a / b; }

/// Count, mean and centred sum of squares of a set of values.
template <typename A>
struct MeanM2 {
  A n;
  A mean;
  A m2;
};

/// The statistics of the union of two sets (Chan, Golub and LeVeque); either may be empty.
template <typename A>
__device__ inline MeanM2<A> merge(const MeanM2<A>& a, const MeanM2<A>& b) {
  const A n = a.n + b.n;
  if (n == A(0)) return a;
  const A delta = b.mean - a.mean;
  const A fb = div_approx(b.n, n);
  return {n, a.mean + delta * fb, a.m2 + b.m2 + delta * delta * a.n * fb};
}

/// Merges the statistics of the block's threads in a fixed order (butterfly within warps, then warp 0's
/// results in warp order); every thread receives the result. `red` is the kernel's __shared__ [kMaxWarps].
template <typename A>
__device__ inline MeanM2<A> block_merge(MeanM2<A> s, MeanM2<A>* red) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const MeanM2<A> other{__shfl_xor_sync(kFullMask, s.n, offset), __shfl_xor_sync(kFullMask, s.mean, offset),
                          __shfl_xor_sync(kFullMask, s.m2, offset)};
    s = merge(s, other);
  }
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  __syncthreads();  // the previous row's readers of red are done
  if (lane == 0) red[warp] = s;
  __syncthreads();
  const int warps = blockDim.x / kWarp;
  MeanM2<A> total = red[0];
  for (int i = 1; i < warps; ++i) total = merge(total, red[i]);
  return total;
}

/// Loads this thread's cached vectors of row `row` of x (nothing when row >= rows).
template <int kCache, typename P, typename S>
__device__ inline void load_cached(P (&cache)[kCache], const S* x, int64_t row, int64_t rows, int64_t d,
                                   int64_t nv) {
  if (row >= rows) return;
  const P* xr = reinterpret_cast<const P*>(x + row * d);
#pragma unroll
  for (int c = 0; c < kCache; ++c) {
    const int64_t j = threadIdx.x + int64_t(c) * blockDim.x;
    if (j < nv) cache[c] = xr[j];
  }
}

/// Moves the vectors prefetched in `next` to `cur`, then prefetches into `next` this thread's cached
/// vectors of row `row` of x (nothing when row >= rows).
template <int kCache, typename P, typename S>
__device__ inline void advance_cached(P (&cur)[kCache], P (&next)[kCache], const S* x, int64_t row, int64_t rows,
                                      int64_t d, int64_t nv) {
#pragma unroll
  for (int c = 0; c < kCache; ++c) cur[c] = next[c];
  load_cached<kCache>(next, x, row, rows, d, nv);
}

/// Loads this thread's cached vectors of the weight w, when there is one (wc is left as it is otherwise).
template <int kCache, typename P, typename S>
__device__ inline void load_weight(P (&wc)[kCache], const S* w, int64_t nv) {
  const P* wv = reinterpret_cast<const P*>(w);
  const int tid = threadIdx.x, nt = blockDim.x;
#pragma unroll
  for (int c = 0; c < kCache; ++c) {
    const int64_t j = tid + int64_t(c) * nt;
    if (w != nullptr && j < nv) wc[c] = wv[j];
  }
}

/// Folds the stored vector o into this thread's row maximum (row_max.cuh). Nothing unless the kernel writes
/// row maxima.
template <bool kRowMax, typename S, int kVec>
__device__ inline void fold_row_max(uint32_t& key, const Pack<S, kVec>& o) {
  if constexpr (kRowMax) row_maxima::fold(key, o);
}

// ---- kernels ----
// Row kernels see a row as nv = d / kVec vectors; vector j of the row is handled by thread j % blockDim.x,
// cached in slot j / blockDim.x when that is < kCache. kVec > 1 only when d % kVec == 0 and every pointer is
// 16-byte aligned, so rows have no tail.

/// kRowMax: also row_max[row] = max |y| of the row as stored (row_maxima::store).
template <typename S, int kVec, int kCache, bool kRowMax>
__global__ __launch_bounds__(kMaxForwardThreads, kCache <= 2 ? 2 : 1) void rmsnorm_forward_kernel(const S* __restrict__ x,
                                                                      const S* __restrict__ w,
                                                                      S* __restrict__ y,
                                                                      acc_t<S>* __restrict__ rstd,
                                                                      float* __restrict__ row_max,
                                                                      int64_t rows, int64_t d, double eps) {
  using E = Elem<S>;
  using A = acc_t<S>;
  using P = Pack<S, kVec>;
  __shared__ A red[kMaxWarps][1];
  __shared__ uint32_t key_red[kMaxWarps];
  const int64_t nv = d / kVec;
  const int tid = threadIdx.x, nt = blockDim.x;
  const bool affine = w != nullptr;
  const P* wv = reinterpret_cast<const P*>(w);
  P wc[kCache] = {};
  load_weight<kCache>(wc, w, nv);
  P xn[kCache];  // the cached vectors of the block's next row, loaded one iteration ahead
  load_cached<kCache>(xn, x, blockIdx.x, rows, d, nv);
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const P* xr = reinterpret_cast<const P*>(x + row * d);
    P* yr = reinterpret_cast<P*>(y + row * d);
    P xc[kCache];
    advance_cached<kCache>(xc, xn, x, row + gridDim.x, rows, d, nv);
    A ss[1] = {A(0)};
#pragma unroll
    for (int c = 0; c < kCache; ++c) {
      const int64_t j = tid + int64_t(c) * nt;
      if (j < nv) {
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          const A v = E::load(xc[c].v[k]);
          ss[0] += v * v;
        }
      }
    }
    for (int64_t j = tid + int64_t(kCache) * nt; j < nv; j += nt) {
      const P p = xr[j];
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        const A v = E::load(p.v[k]);
        ss[0] += v * v;
      }
    }
    block_sum(ss, red);
    const A inv = inverse_root(ss[0], d, eps);
    if (tid == 0) rstd[row] = inv;
    uint32_t key = 0;
#pragma unroll
    for (int c = 0; c < kCache; ++c) {
      const int64_t j = tid + int64_t(c) * nt;
      if (j < nv) {
        P o;
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          const A wk = affine ? E::load(wc[c].v[k]) : A(1);
          o.v[k] = E::store(mul_rn(mul_rn(E::load(xc[c].v[k]), inv), wk));
        }
        yr[j] = o;
        fold_row_max<kRowMax>(key, o);
      }
    }
    for (int64_t j = tid + int64_t(kCache) * nt; j < nv; j += nt) {
      const P p = xr[j];
      P wp = {};
      if (affine) wp = wv[j];
      P o;
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        const A wk = affine ? E::load(wp.v[k]) : A(1);
        o.v[k] = E::store(mul_rn(mul_rn(E::load(p.v[k]), inv), wk));
      }
      yr[j] = o;
      fold_row_max<kRowMax>(key, o);
    }
    if constexpr (kRowMax) row_maxima::store(key, key_red, row_max + row);
  }
}

/// The backward's epilogue on the dx rows: the residual gradient added to each value once it is rounded (as
/// ops::add rounds: BF16 in float, which gives the bits of its double sum; F32 and F64 in double), then the
/// row's max |dx| as stored. Either pointer may be null (uniform over the grid).
template <typename S>
struct DxEpilogue {
  const S* residual;  ///< [rows, d]
  float* row_max;     ///< [rows]

  template <int kVec>
  __device__ __forceinline__ void apply(Pack<S, kVec>& o, int64_t row, int64_t d, int64_t j, uint32_t& key) const {
    if (residual != nullptr) {
      const Pack<S, kVec> r = reinterpret_cast<const Pack<S, kVec>*>(residual + row * d)[j];
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        if constexpr (std::is_same_v<S, uint16_t>) {
          o.v[k] = Elem<S>::store(add_rn(Elem<S>::load(r.v[k]), Elem<S>::load(o.v[k])));
        } else {
          o.v[k] = static_cast<S>(add_rn(static_cast<double>(r.v[k]), static_cast<double>(o.v[k])));
        }
      }
    }
    if constexpr (!std::is_same_v<S, double>) {
      if (row_max != nullptr) row_maxima::fold(key, o);
    }
  }

  /// Every thread of the block calls it once per row.
  __device__ __forceinline__ void finish_row(uint32_t key, uint32_t* key_red, int64_t row) const {
    if constexpr (!std::is_same_v<S, double>) {
      if (row_max != nullptr) row_maxima::store(key, key_red, row_max + row);
    }
  }
};

/// dx = rstd * g - (rstd^3 * mean(g * x)) * x with g = dy * w. With a weight, each block also sums
/// dy * x * rstd over its rows into its row of dw_part ([gridDim.x, d]): registers for the cached columns,
/// the workspace row itself (touched by one thread per column) for the rest.
template <typename S, int kVec, int kCache, bool kCodes>
__global__ __launch_bounds__(kMaxBackwardThreads) void rmsnorm_backward_kernel(
    const S* __restrict__ dy, const PackSource<S, kVec, kCodes> x, const S* __restrict__ w,
    const acc_t<S>* __restrict__ rstd, S* __restrict__ dx, acc_t<S>* __restrict__ dw_part, int64_t rows,
    int64_t d, const DxEpilogue<S> epilogue) {
  using E = Elem<S>;
  using A = acc_t<S>;
  using P = Pack<S, kVec>;
  __shared__ A red[kMaxWarps][1];
  __shared__ uint32_t key_red[kMaxWarps];
  const int64_t nv = d / kVec;
  const int tid = threadIdx.x, nt = blockDim.x;
  const bool affine = w != nullptr;
  const P* wv = reinterpret_cast<const P*>(w);
  A* part = affine ? dw_part + blockIdx.x * d : nullptr;
  P wc[kCache] = {};
  A dwc[kCache][kVec] = {};
  load_weight<kCache>(wc, w, nv);
  if (affine) {
    for (int64_t j = tid + int64_t(kCache) * nt; j < nv; j += nt) {
#pragma unroll
      for (int k = 0; k < kVec; ++k) part[j * kVec + k] = A(0);
    }
  }
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t xrow = row * nv;  // the row's first pack of x
    const P* dyr = reinterpret_cast<const P*>(dy + row * d);
    P* dxr = reinterpret_cast<P*>(dx + row * d);
    const A inv = rstd[row];
    P xc[kCache], gc[kCache];
    A dot[1] = {A(0)};
#pragma unroll
    for (int c = 0; c < kCache; ++c) {
      const int64_t j = tid + int64_t(c) * nt;
      if (j < nv) {
        xc[c] = x.load(xrow + j);
        gc[c] = dyr[j];
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          const A wk = affine ? E::load(wc[c].v[k]) : A(1);
          dot[0] += mul_rn(E::load(gc[c].v[k]), wk) * E::load(xc[c].v[k]);
        }
      }
    }
    for (int64_t j = tid + int64_t(kCache) * nt; j < nv; j += nt) {
      const P xp = x.load(xrow + j), gp = dyr[j];
      P wp = {};
      if (affine) wp = wv[j];
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        const A wk = affine ? E::load(wp.v[k]) : A(1);
        dot[0] += mul_rn(E::load(gp.v[k]), wk) * E::load(xp.v[k]);
      }
    }
    block_sum(dot, red);
    const A coef = static_cast<A>(static_cast<double>(inv) * inv * inv * static_cast<double>(dot[0]) /
                                  static_cast<double>(d));
    uint32_t key = 0;
#pragma unroll
    for (int c = 0; c < kCache; ++c) {
      const int64_t j = tid + int64_t(c) * nt;
      if (j < nv) {
        P o;
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          const A wk = affine ? E::load(wc[c].v[k]) : A(1);
          const A xk = E::load(xc[c].v[k]), dyk = E::load(gc[c].v[k]);
          o.v[k] = E::store(sub_rn(mul_rn(inv, mul_rn(dyk, wk)), mul_rn(coef, xk)));
          dwc[c][k] += dyk * mul_rn(xk, inv);
        }
        epilogue.apply(o, row, d, j, key);
        dxr[j] = o;
      }
    }
    for (int64_t j = tid + int64_t(kCache) * nt; j < nv; j += nt) {
      const P xp = x.load(xrow + j), gp = dyr[j];
      P wp = {};
      if (affine) wp = wv[j];
      P o;
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        const A wk = affine ? E::load(wp.v[k]) : A(1);
        const A xk = E::load(xp.v[k]), dyk = E::load(gp.v[k]);
        o.v[k] = E::store(sub_rn(mul_rn(inv, mul_rn(dyk, wk)), mul_rn(coef, xk)));
        if (affine) part[j * kVec + k] += dyk * mul_rn(xk, inv);
      }
      epilogue.apply(o, row, d, j, key);
      dxr[j] = o;
    }
    epilogue.finish_row(key, key_red, row);
  }
  if (affine) {
#pragma unroll
    for (int c = 0; c < kCache; ++c) {
      const int64_t j = tid + int64_t(c) * nt;
      if (j < nv) {
#pragma unroll
        for (int k = 0; k < kVec; ++k) part[j * kVec + k] = dwc[c][k];
      }
    }
  }
}

/// accum[col] += sum over the `parts` rows of part[:, col], in double and in a fixed order: slice s of the
/// block sums rows s, s + kReduceSlices, ...; slice 0 then adds the slices in order.
template <typename A, typename Out>
__global__ __launch_bounds__(kWarp* kReduceSlices) void dweight_reduce_kernel(const A* __restrict__ part,
                                                                              int64_t parts, int64_t d,
                                                                              Out* __restrict__ accum) {
  __shared__ double slice_sums[kReduceSlices][kWarp];
  const int64_t col = blockIdx.x * int64_t(kWarp) + threadIdx.x;
  double s = 0.0;
  if (col < d) {
    for (int64_t g = threadIdx.y; g < parts; g += kReduceSlices) s += static_cast<double>(part[g * d + col]);
  }
  slice_sums[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && col < d) {
    double total = 0.0;
#pragma unroll
    for (int i = 0; i < kReduceSlices; ++i) total += slice_sums[i][threadIdx.x];
    accum[col] = static_cast<Out>(static_cast<double>(accum[col]) + total);
  }
}

/// One pass over the row: each thread's (count, mean, centred sum of squares) -- a two-pass over its cached
/// elements, merged per vector for re-read ones -- then one block merge (Chan et al.), as stable as the
/// CPU's two passes.
/// kRowMax: also row_max[row] = max |y| of the row as stored (row_maxima::store).
template <typename S, int kVec, int kCache, bool kRowMax>
__global__ __launch_bounds__(kMaxForwardThreads, kCache <= 2 ? 2 : 1) void layernorm_forward_kernel(const S* __restrict__ x,
                                                                        S* __restrict__ y,
                                                                        acc_t<S>* __restrict__ mean,
                                                                        acc_t<S>* __restrict__ rstd,
                                                                        float* __restrict__ row_max,
                                                                        int64_t rows, int64_t d, double eps) {
  using E = Elem<S>;
  using A = acc_t<S>;
  using P = Pack<S, kVec>;
  __shared__ MeanM2<A> red[kMaxWarps];
  __shared__ uint32_t key_red[kMaxWarps];
  const int64_t nv = d / kVec;
  const int tid = threadIdx.x, nt = blockDim.x;
  P xn[kCache];  // the cached vectors of the block's next row, loaded one iteration ahead
  load_cached<kCache>(xn, x, blockIdx.x, rows, d, nv);
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const P* xr = reinterpret_cast<const P*>(x + row * d);
    P* yr = reinterpret_cast<P*>(y + row * d);
    P xc[kCache];
    advance_cached<kCache>(xc, xn, x, row + gridDim.x, rows, d, nv);
    A count = A(0), sum = A(0);
#pragma unroll
    for (int c = 0; c < kCache; ++c) {
      const int64_t j = tid + int64_t(c) * nt;
      if (j < nv) {
        count += A(kVec);
#pragma unroll
        for (int k = 0; k < kVec; ++k) sum += E::load(xc[c].v[k]);
      }
    }
    MeanM2<A> st{count, count > A(0) ? div_approx(sum, count) : A(0), A(0)};
#pragma unroll
    for (int c = 0; c < kCache; ++c) {
      const int64_t j = tid + int64_t(c) * nt;
      if (j < nv) {
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          const A centred = E::load(xc[c].v[k]) - st.mean;
          st.m2 += centred * centred;
        }
      }
    }
    for (int64_t j = tid + int64_t(kCache) * nt; j < nv; j += nt) {
      const P p = xr[j];
      A vsum = A(0);
#pragma unroll
      for (int k = 0; k < kVec; ++k) vsum += E::load(p.v[k]);
      MeanM2<A> v{A(kVec), vsum * (A(1) / A(kVec)), A(0)};
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        const A centred = E::load(p.v[k]) - v.mean;
        v.m2 += centred * centred;
      }
      st = merge(st, v);
    }
    st = block_merge(st, red);
    const A m = st.mean;
    const A inv = inverse_root(st.m2, d, eps);
    if (tid == 0) {
      mean[row] = m;
      rstd[row] = inv;
    }
    uint32_t key = 0;
#pragma unroll
    for (int c = 0; c < kCache; ++c) {
      const int64_t j = tid + int64_t(c) * nt;
      if (j < nv) {
        P o;
#pragma unroll
        for (int k = 0; k < kVec; ++k) o.v[k] = E::store(mul_rn(sub_rn(E::load(xc[c].v[k]), m), inv));
        yr[j] = o;
        fold_row_max<kRowMax>(key, o);
      }
    }
    for (int64_t j = tid + int64_t(kCache) * nt; j < nv; j += nt) {
      const P p = xr[j];
      P o;
#pragma unroll
      for (int k = 0; k < kVec; ++k) o.v[k] = E::store(mul_rn(sub_rn(E::load(p.v[k]), m), inv));
      yr[j] = o;
      fold_row_max<kRowMax>(key, o);
    }
    if constexpr (kRowMax) row_maxima::store(key, key_red, row_max + row);
  }
}

/// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), xhat = (x - mean) * rstd, g = dy.
template <typename S, int kVec, int kCache, bool kCodes>
__global__ __launch_bounds__(kMaxThreads) void layernorm_backward_kernel(
    const S* __restrict__ dy, const PackSource<S, kVec, kCodes> x, const acc_t<S>* __restrict__ mean,
    const acc_t<S>* __restrict__ rstd, S* __restrict__ dx, int64_t rows, int64_t d, const DxEpilogue<S> epilogue) {
  using E = Elem<S>;
  using A = acc_t<S>;
  using P = Pack<S, kVec>;
  __shared__ A red[kMaxWarps][2];
  __shared__ uint32_t key_red[kMaxWarps];
  const int64_t nv = d / kVec;
  const int tid = threadIdx.x, nt = blockDim.x;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t xrow = row * nv;  // the row's first pack of x
    const P* dyr = reinterpret_cast<const P*>(dy + row * d);
    P* dxr = reinterpret_cast<P*>(dx + row * d);
    const A m = mean[row], inv = rstd[row];
    P xc[kCache], gc[kCache];
    A sums[2] = {A(0), A(0)};  // sum g, sum g * xhat
#pragma unroll
    for (int c = 0; c < kCache; ++c) {
      const int64_t j = tid + int64_t(c) * nt;
      if (j < nv) {
        xc[c] = x.load(xrow + j);
        gc[c] = dyr[j];
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          const A g = E::load(gc[c].v[k]);
          sums[0] += g;
          sums[1] += g * mul_rn(sub_rn(E::load(xc[c].v[k]), m), inv);
        }
      }
    }
    for (int64_t j = tid + int64_t(kCache) * nt; j < nv; j += nt) {
      const P xp = x.load(xrow + j), gp = dyr[j];
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        const A g = E::load(gp.v[k]);
        sums[0] += g;
        sums[1] += g * mul_rn(sub_rn(E::load(xp.v[k]), m), inv);
      }
    }
    block_sum(sums, red);
    const A a = static_cast<A>(static_cast<double>(sums[0]) / static_cast<double>(d));
    const A b = static_cast<A>(static_cast<double>(sums[1]) / static_cast<double>(d));
    uint32_t key = 0;
#pragma unroll
    for (int c = 0; c < kCache; ++c) {
      const int64_t j = tid + int64_t(c) * nt;
      if (j < nv) {
        P o;
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          const A xhat = mul_rn(sub_rn(E::load(xc[c].v[k]), m), inv);
          o.v[k] = E::store(mul_rn(inv, sub_rn(sub_rn(E::load(gc[c].v[k]), a), mul_rn(xhat, b))));
        }
        epilogue.apply(o, row, d, j, key);
        dxr[j] = o;
      }
    }
    for (int64_t j = tid + int64_t(kCache) * nt; j < nv; j += nt) {
      const P xp = x.load(xrow + j), gp = dyr[j];
      P o;
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        const A xhat = mul_rn(sub_rn(E::load(xp.v[k]), m), inv);
        o.v[k] = E::store(mul_rn(inv, sub_rn(sub_rn(E::load(gp.v[k]), a), mul_rn(xhat, b))));
      }
      epilogue.apply(o, row, d, j, key);
      dxr[j] = o;
    }
    epilogue.finish_row(key, key_red, row);
  }
}

// ---- launch helpers ----

struct Rows {
  int64_t n = 0;  // rows
  int64_t d = 0;  // elements per row
};

Rows rows_of(const Tensor& x) {
  const int64_t d = x.dim() == 0 ? 1 : x.size(-1);
  return {d == 0 ? 0 : x.numel() / d, d};
}

/// Vectors of its row each thread keeps in registers, kSmall or kLarge per kernel: the forward kernels
/// keep 2 (two 16-byte loads per thread in flight), 4 for rows longer than 2 per thread of their largest
/// block; the LayerNorm backward keeps 2; the RMSNorm backward, which also keeps the weight and the
/// gradient partials, keeps 1, or 2 for long rows (2 needs ~125 registers, halving its resident threads).
/// So rows of up to 2048 vectors (1024 for the RMSNorm backward) -- 16384 bf16 or 8192 f32 elements -- are
/// read once; longer rows are partly read twice.
struct RowPlan {
  bool vectorised = false;
  int cache = 2;
  int threads = kWarp;
};

/// kSmall vectors per thread when a block of at most max_threads holds the row that way, else kLarge; then
/// the fewest threads (a multiple of 32, at most max_threads) that hold the row.
template <typename S, int kSmall, int kLarge>
RowPlan plan_rows(int64_t d, bool vectorised, int max_threads) {
  const int64_t nv = d / (vectorised ? kVec16<S> : 1);
  const int cache = nv <= int64_t(kSmall) * max_threads ? kSmall : kLarge;
  const int64_t threads = (nv + cache - 1) / cache;
  const int64_t rounded = std::max<int64_t>(kWarp, (threads + kWarp - 1) / kWarp * kWarp);
  return {vectorised, cache, static_cast<int>(std::min<int64_t>(rounded, max_threads))};
}

/// Calls f(integral_constant kVec, integral_constant kCache) for the plan made by plan_rows<S, kSmall, kLarge>.
template <typename S, int kSmall, int kLarge, typename F>
void with_plan(const RowPlan& plan, F&& f) {
  using V = std::integral_constant<int, kVec16<S>>;
  using One = std::integral_constant<int, 1>;
  using Small = std::integral_constant<int, kSmall>;
  using Large = std::integral_constant<int, kLarge>;
  if constexpr (kSmall != kLarge) {
    if (plan.cache == kLarge) {
      plan.vectorised ? f(V{}, Large{}) : f(One{}, Large{});
      return;
    }
  }
  plan.vectorised ? f(V{}, Small{}) : f(One{}, Small{});
}

/// Calls f(std::true_type) when row maxima are asked for, f(std::false_type) otherwise. S is the storage
/// type: no f64 maxima (coat/ops refuses them before; FP8 quantisation reads f32, bf16 and f16 only).
template <typename S, typename F>
void with_row_max(const Tensor* row_max, const char* op, F&& f) {
  if (row_max == nullptr) {
    f(std::false_type{});
    return;
  }
  if constexpr (std::is_same_v<S, double>) {
    COAT_CHECK(false, NotImplemented, "[", op, "] cuda: row maxima are written for f32 and bf16 outputs, not f64");
  } else {
    f(std::true_type{});
  }
}

/// Blocks of a persistent row kernel: as many as are resident on the device at once, at most one per row.
template <typename Kernel>
unsigned persistent_grid(Kernel kernel, int threads, int64_t rows, const Tensor& t) {
  int per_sm = 0;
  COAT_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0));
  const int64_t resident =
      static_cast<int64_t>(std::max(per_sm, 1)) * context_of(t).properties().multiprocessor_count;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(rows, resident)));
}

/// The epilogue of a backward launch; f64 has no row maxima (NotImplemented).
template <typename S>
DxEpilogue<S> dx_epilogue(const Tensor& residual, Tensor* row_max, const char* op) {
  constexpr bool kF64 = std::is_same_v<S, double>;
  COAT_CHECK(row_max == nullptr || !kF64, NotImplemented, "[", op,
             "] cuda: row maxima are written for f32 and bf16 outputs, not f64");
  return {residual.defined() ? residual.data<S>() : nullptr, row_max != nullptr ? row_max->data<float>() : nullptr};
}

/// Whether the backward's x (values or codes) allows 16-byte packs of S.
template <typename S>
bool x_vectorizable(const NormInput& x) {
  if (x.values.defined()) return aligned16(x.values.data_ptr());
  return reinterpret_cast<uintptr_t>(x.codes.data_ptr()) % kVec16<S> == 0;
}

/// The backward's x as a PackSource, its kind in the type (with_x_source).
template <typename S, int kVec, bool kC>
struct XSource {
  static constexpr bool kCodes = kC;
  PackSource<S, kVec, kC> pack;
};

/// Calls f with the backward's x as an XSource of kVec packs: its values, or its codes.
template <typename S, int kVec, typename F>
void with_x_source(const NormInput& x, F&& f) {
  if (x.values.defined()) {
    f(XSource<S, kVec, false>{{x.values.data<S>(), nullptr, nullptr}});
  } else {
    f(XSource<S, kVec, true>{{nullptr, static_cast<const uint8_t*>(x.codes.data_ptr()), x.scale_inv.data<float>()}});
  }
}

/// accum[col] += the column sums of the `parts` partial rows (dweight_reduce_kernel).
template <typename A>
void reduce_dweight(const A* part, unsigned parts, int64_t d, Tensor& accum, cudaStream_t stream) {
  const dim3 block(kWarp, kReduceSlices);
  const unsigned grid = static_cast<unsigned>((d + kWarp - 1) / kWarp);
  if (accum.dtype() == DType::F64) {
    dweight_reduce_kernel<A, double><<<grid, block, 0, stream>>>(part, parts, d, accum.data<double>());
  } else {
    dweight_reduce_kernel<A, float><<<grid, block, 0, stream>>>(part, parts, d, accum.data<float>());
  }
  COAT_CUDA_CHECK_LAST_LAUNCH();
}

}  // namespace

void rmsnorm_forward(const Tensor& x, const Tensor& weight, double eps, Tensor& y, Tensor& rstd,
                     Tensor* row_max) {
  const Rows r = rows_of(x);
  if (r.n == 0) return;
  dispatch_storage(x.dtype(), "rmsnorm_forward", [&](auto s) {
    using S = decltype(s);
    const S* xp = x.data<S>();
    const S* wp = weight.defined() ? weight.data<S>() : nullptr;
    S* yp = y.data<S>();
    float* mp = row_max != nullptr ? row_max->data<float>() : nullptr;
    const bool vec = r.d % kVec16<S> == 0 && aligned16(xp) && aligned16(yp) && (wp == nullptr || aligned16(wp));
    const RowPlan plan = plan_rows<S, 2, 4>(r.d, vec, kMaxForwardThreads);
    with_row_max<S>(row_max, "rmsnorm_forward", [&](auto m) {
      with_plan<S, 2, 4>(plan, [&](auto v, auto c) {
        auto kernel = rmsnorm_forward_kernel<S, decltype(v)::value, decltype(c)::value, decltype(m)::value>;
        const unsigned grid = persistent_grid(kernel, plan.threads, r.n, x);
        kernel<<<grid, plan.threads, 0, stream_of(y)>>>(xp, wp, yp, rstd.data<acc_t<S>>(), mp, r.n, r.d, eps);
        COAT_CUDA_CHECK_LAST_LAUNCH();
      });
    });
  });
}

void rmsnorm_backward(const Tensor& dy, const NormInput& x, const Tensor& weight, const Tensor& rstd, Tensor& dx,
                      Tensor& dweight_accum, const Tensor& residual, Tensor* row_max) {
  const Rows r = rows_of(dy);
  if (r.n == 0) return;
  dispatch_storage(dy.dtype(), "rmsnorm_backward", [&](auto s) {
    using S = decltype(s);
    using A = acc_t<S>;
    const S* dyp = dy.data<S>();
    const S* wp = weight.defined() ? weight.data<S>() : nullptr;
    S* dxp = dx.data<S>();
    const DxEpilogue<S> epilogue = dx_epilogue<S>(residual, row_max, "rmsnorm_backward");
    const bool vec = r.d % kVec16<S> == 0 && aligned16(dyp) && x_vectorizable<S>(x) && aligned16(dxp) &&
                     (wp == nullptr || aligned16(wp)) && (epilogue.residual == nullptr || aligned16(epilogue.residual));
    const RowPlan plan = plan_rows<S, 1, 2>(r.d, vec, kMaxBackwardThreads);
    cudaStream_t stream = stream_of(dx);
    with_plan<S, 1, 2>(plan, [&](auto v, auto c) {
      with_x_source<S, decltype(v)::value>(x, [&](auto source) {
        constexpr bool kCodes = decltype(source)::kCodes;
        auto kernel = rmsnorm_backward_kernel<S, decltype(v)::value, decltype(c)::value, kCodes>;
        const unsigned grid = persistent_grid(kernel, plan.threads, r.n, dy);
        // One partial row per block; freed at the end of this scope, after the launches below (the
        // caching allocator reuses blocks in stream order).
        Tensor part;
        if (wp != nullptr) {
          part = Tensor::empty(dy.context(), {static_cast<int64_t>(grid), r.d},
                               std::is_same_v<A, double> ? DType::F64 : DType::F32, MemoryCategory::Workspace);
        }
        A* partp = wp != nullptr ? part.data<A>() : nullptr;
        kernel<<<grid, plan.threads, 0, stream>>>(dyp, source.pack, wp, rstd.data<A>(), dxp, partp, r.n, r.d,
                                                  epilogue);
        COAT_CUDA_CHECK_LAST_LAUNCH();
        if (wp != nullptr) reduce_dweight(partp, grid, r.d, dweight_accum, stream);
      });
    });
  });
}

void layernorm_forward(const Tensor& x, double eps, Tensor& y, Tensor& mean, Tensor& rstd, Tensor* row_max) {
  const Rows r = rows_of(x);
  if (r.n == 0) return;
  dispatch_storage(x.dtype(), "layernorm_forward", [&](auto s) {
    using S = decltype(s);
    using A = acc_t<S>;
    const S* xp = x.data<S>();
    S* yp = y.data<S>();
    float* mp = row_max != nullptr ? row_max->data<float>() : nullptr;
    const bool vec = r.d % kVec16<S> == 0 && aligned16(xp) && aligned16(yp);
    const RowPlan plan = plan_rows<S, 2, 4>(r.d, vec, kMaxForwardThreads);
    with_row_max<S>(row_max, "layernorm_forward", [&](auto m) {
      with_plan<S, 2, 4>(plan, [&](auto v, auto c) {
        auto kernel = layernorm_forward_kernel<S, decltype(v)::value, decltype(c)::value, decltype(m)::value>;
        const unsigned grid = persistent_grid(kernel, plan.threads, r.n, x);
        kernel<<<grid, plan.threads, 0, stream_of(y)>>>(xp, yp, mean.data<A>(), rstd.data<A>(), mp, r.n, r.d,
                                                         eps);
        COAT_CUDA_CHECK_LAST_LAUNCH();
      });
    });
  });
}

void layernorm_backward(const Tensor& dy, const NormInput& x, const Tensor& mean, const Tensor& rstd,
                        Tensor& dx, const Tensor& residual, Tensor* row_max) {
  const Rows r = rows_of(dy);
  if (r.n == 0) return;
  dispatch_storage(dy.dtype(), "layernorm_backward", [&](auto s) {
    using S = decltype(s);
    using A = acc_t<S>;
    const S* dyp = dy.data<S>();
    S* dxp = dx.data<S>();
    const DxEpilogue<S> epilogue = dx_epilogue<S>(residual, row_max, "layernorm_backward");
    const bool vec = r.d % kVec16<S> == 0 && aligned16(dyp) && x_vectorizable<S>(x) && aligned16(dxp) &&
                     (epilogue.residual == nullptr || aligned16(epilogue.residual));
    const RowPlan plan = plan_rows<S, 2, 2>(r.d, vec, kMaxThreads);
    with_plan<S, 2, 2>(plan, [&](auto v, auto c) {
      with_x_source<S, decltype(v)::value>(x, [&](auto source) {
        constexpr bool kCodes = decltype(source)::kCodes;
        auto kernel = layernorm_backward_kernel<S, decltype(v)::value, decltype(c)::value, kCodes>;
        const unsigned grid = persistent_grid(kernel, plan.threads, r.n, dy);
        kernel<<<grid, plan.threads, 0, stream_of(dx)>>>(dyp, source.pack, mean.data<A>(), rstd.data<A>(), dxp,
                                                         r.n, r.d, epilogue);
        COAT_CUDA_CHECK_LAST_LAUNCH();
      });
    });
  });
}

}  // namespace coat::cuda
