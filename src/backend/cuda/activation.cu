// CUDA kernels: SwiGLU gating and its backward, on separate gate and up tensors and on a packed gate/up
// projection [N, 2F], then their launchers. Element-wise and memory-bound: 16-byte vectors (when every
// pointer is 16-byte aligned, and for the packed form F a multiple of the vector), kUnroll independent
// vectors per thread in flight, a grid-stride loop, a scalar loop for the tail. The formulas are the CPU
// twin's, unfused. With row maxima (the packed form), a row kernel instead: one block per row, so that the
// row's max |y| is a block reduction of what the block stores.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "coat/backend/cuda/activation.h"
#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/device_vector.cuh"
#include "coat/backend/cuda/launch.h"
#include "coat/backend/cuda/pack_source.cuh"
#include "coat/backend/cuda/row_max.cuh"
#include "coat/backend/quantize_math.h"

namespace coat::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 2;
constexpr int kWarp = 32;

__device__ inline float exp_of(float a) { return expf(a); }
__device__ inline double exp_of(double a) { return exp(a); }

template <typename A>
__device__ inline A sigmoid(A x) {
  return A(1) / (A(1) + exp_of(-x));
}

/// y = silu(g) * u for one element.
template <typename A>
__device__ inline A swiglu_value(A g, A u) {
  return mul_rn(mul_rn(g, sigmoid(g)), u);
}

/// (dgate, dup) for one element.
template <typename A>
__device__ inline void swiglu_grads(A dy, A g, A u, A& dgate, A& dup) {
  const A s = sigmoid(g);
  dgate = mul_rn(mul_rn(dy, u), mul_rn(s, add_rn(A(1), mul_rn(g, sub_rn(A(1), s)))));
  dup = mul_rn(dy, mul_rn(g, s));
}

__device__ inline int64_t global_thread() { return blockIdx.x * int64_t(blockDim.x) + threadIdx.x; }
__device__ inline int64_t grid_threads() { return int64_t(gridDim.x) * blockDim.x; }

template <typename S, int kVec>
__global__ __launch_bounds__(kThreads) void swiglu_kernel(const S* __restrict__ gate, const S* __restrict__ up,
                                                          S* __restrict__ y, int64_t n) {
  using E = Elem<S>;
  using P = Pack<S, kVec>;
  const int64_t vecs = n / kVec;
  const int64_t stride = grid_threads();
  const P* gp = reinterpret_cast<const P*>(gate);
  const P* upp = reinterpret_cast<const P*>(up);
  P* yp = reinterpret_cast<P*>(y);
  for (int64_t first = global_thread(); first < vecs; first += stride * kUnroll) {
    P g[kUnroll], u[kUnroll];
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const int64_t i = first + r * stride;
      if (i < vecs) {
        g[r] = gp[i];
        u[r] = upp[i];
      }
    }
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const int64_t i = first + r * stride;
      if (i < vecs) {
        P o;
#pragma unroll
        for (int k = 0; k < kVec; ++k) o.v[k] = E::store(swiglu_value(E::load(g[r].v[k]), E::load(u[r].v[k])));
        yp[i] = o;
      }
    }
  }
  for (int64_t i = vecs * kVec + global_thread(); i < n; i += stride) {
    y[i] = E::store(swiglu_value(E::load(gate[i]), E::load(up[i])));
  }
}

template <typename S, int kVec>
__global__ __launch_bounds__(kThreads) void swiglu_backward_kernel(const S* __restrict__ dy,
                                                                   const S* __restrict__ gate,
                                                                   const S* __restrict__ up,
                                                                   S* __restrict__ dgate, S* __restrict__ dup,
                                                                   int64_t n) {
  using E = Elem<S>;
  using A = typename E::A;
  using P = Pack<S, kVec>;
  const int64_t vecs = n / kVec;
  const int64_t stride = grid_threads();
  const P* dyp = reinterpret_cast<const P*>(dy);
  const P* gp = reinterpret_cast<const P*>(gate);
  const P* upp = reinterpret_cast<const P*>(up);
  P* dgp = reinterpret_cast<P*>(dgate);
  P* dup_p = reinterpret_cast<P*>(dup);
  for (int64_t first = global_thread(); first < vecs; first += stride * kUnroll) {
    P d[kUnroll], g[kUnroll], u[kUnroll];
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const int64_t i = first + r * stride;
      if (i < vecs) {
        d[r] = dyp[i];
        g[r] = gp[i];
        u[r] = upp[i];
      }
    }
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const int64_t i = first + r * stride;
      if (i < vecs) {
        P og, ou;
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          A dg, du;
          swiglu_grads(E::load(d[r].v[k]), E::load(g[r].v[k]), E::load(u[r].v[k]), dg, du);
          og.v[k] = E::store(dg);
          ou.v[k] = E::store(du);
        }
        dgp[i] = og;
        dup_p[i] = ou;
      }
    }
  }
  for (int64_t i = vecs * kVec + global_thread(); i < n; i += stride) {
    A dg, du;
    swiglu_grads(E::load(dy[i]), E::load(gate[i]), E::load(up[i]), dg, du);
    dgate[i] = E::store(dg);
    dup[i] = E::store(du);
  }
}

/// Packed rows: row n of gu is gate[n, :F] then up[n, :F]. Item i (kVec elements) is vector c = i % vpr of
/// row n = i / vpr (vpr = F / kVec vectors per row): y's vector i, gu's vectors n * 2 vpr + c and + vpr.
template <typename S, int kVec>
__global__ __launch_bounds__(kThreads) void swiglu_packed_kernel(const S* __restrict__ gu, S* __restrict__ y,
                                                                 int64_t vpr, int64_t items) {
  using E = Elem<S>;
  using P = Pack<S, kVec>;
  const int64_t stride = grid_threads();
  const P* gup = reinterpret_cast<const P*>(gu);
  P* yp = reinterpret_cast<P*>(y);
  for (int64_t first = global_thread(); first < items; first += stride * kUnroll) {
    P g[kUnroll], u[kUnroll];
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const int64_t i = first + r * stride;
      if (i < items) {
        const int64_t n = i / vpr;
        const P* row = gup + n * 2 * vpr + (i - n * vpr);
        g[r] = row[0];
        u[r] = row[vpr];
      }
    }
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const int64_t i = first + r * stride;
      if (i < items) {
        P o;
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          o.v[k] = E::store(swiglu_value(E::load(g[r].v[k]), E::load(u[r].v[k])));
        }
        yp[i] = o;
      }
    }
  }
}

/// Packed rows with their maxima: block b computes rows b, b + gridDim.x, ... (its threads along the row's vpr
/// vectors, kUnroll in flight each), folds max |y| as stored into an amax key (quantize_math.h: exact,
/// order-free, NaN above inf above every finite value), and one block reduction per row gives row_max[n].
/// The same y as swiglu_packed_kernel (the same per-element arithmetic).
template <typename S, int kVec>
__global__ __launch_bounds__(kThreads) void swiglu_packed_row_max_kernel(const S* __restrict__ gu,
                                                                         S* __restrict__ y,
                                                                         float* __restrict__ row_max,
                                                                         int64_t vpr, int64_t rows) {
  using E = Elem<S>;
  using P = Pack<S, kVec>;
  __shared__ uint32_t warp_keys[kThreads / kWarp];
  const int tid = threadIdx.x, nt = blockDim.x;
  for (int64_t n = blockIdx.x; n < rows; n += gridDim.x) {
    const P* g = reinterpret_cast<const P*>(gu) + n * 2 * vpr;
    const P* u = g + vpr;
    P* yr = reinterpret_cast<P*>(y) + n * vpr;
    uint32_t key = 0;
    for (int64_t first = tid; first < vpr; first += int64_t(nt) * kUnroll) {
      P gv[kUnroll], uv[kUnroll];
#pragma unroll
      for (int r = 0; r < kUnroll; ++r) {
        const int64_t j = first + int64_t(r) * nt;
        if (j < vpr) {
          gv[r] = g[j];
          uv[r] = u[j];
        }
      }
#pragma unroll
      for (int r = 0; r < kUnroll; ++r) {
        const int64_t j = first + int64_t(r) * nt;
        if (j < vpr) {
          P o;
#pragma unroll
          for (int k = 0; k < kVec; ++k) {
            o.v[k] = E::store(swiglu_value(E::load(gv[r].v[k]), E::load(uv[r].v[k])));
          }
          row_maxima::fold(key, o);
          yr[j] = o;
        }
      }
    }
    row_maxima::store(key, warp_keys, row_max + n);
  }
}

/// swiglu_packed_row_max_kernel that also writes gu's 1x16 E4M3 copy (COAT's saved input of the SwiGLU):
/// the codes and scale_inv that quantize_per_group(gu, 16, E4M3) writes, from the values it has read anyway.
/// A group of 16 is kLanes = 16 / kVec consecutive vectors, held by kLanes consecutive lanes (the block's
/// threads are a multiple of 32 and F of 16), whose amax keys meet by shuffles. The loop bound is uniform over
/// the block so that every lane reaches them.
template <typename S, int kVec>
__global__ __launch_bounds__(kThreads) void swiglu_packed_compress_kernel(const S* __restrict__ gu, S* __restrict__ y,
                                                                          float* __restrict__ row_max,
                                                                          uint8_t* __restrict__ codes,
                                                                          float* __restrict__ scale_inv, int64_t vpr,
                                                                          int64_t rows) {
  using E = Elem<S>;
  using P = Pack<S, kVec>;
  using CP = Pack<uint8_t, kVec>;
  constexpr int kLanes = 16 / kVec;
  static_assert(kLanes >= 1 && 16 % kVec == 0 && kWarp % kLanes == 0, "a group of 16 is whole vectors of a warp");
  constexpr float kFmtMax = fp8math::fp8_max(DType::E4M3);
  __shared__ uint32_t warp_keys[kThreads / kWarp];
  const int tid = threadIdx.x, nt = blockDim.x;
  const auto group_key = [](const P& p) {
    uint32_t k = 0;
#pragma unroll
    for (int v = 0; v < kVec; ++v) k = fp8math::max_key(k, fp8math::amax_key(E::load(p.v[v])));
    for (int o = kLanes / 2; o > 0; o /= 2) k = fp8math::max_key(k, __shfl_xor_sync(0xffffffffu, k, o));
    return k;
  };
  const auto encode = [](const P& p, uint32_t k, CP* out, float* out_scale_inv, bool head) {
    const float scale = fp8math::scale_from_amax(fp8math::amax_from_key(k), kFmtMax);
    CP c;
#pragma unroll
    for (int v = 0; v < kVec; ++v) {
      c.v[v] = fp8math::quantize_value<DType::E4M3>(E::load(p.v[v]), scale, Fp8Saturation::Saturate);
    }
    *out = c;
    if (head) *out_scale_inv = fp8math::scale_inv_from_scale(scale);
  };
  for (int64_t n = blockIdx.x; n < rows; n += gridDim.x) {
    const P* g = reinterpret_cast<const P*>(gu) + n * 2 * vpr;
    const P* u = g + vpr;
    P* yr = reinterpret_cast<P*>(y) + n * vpr;
    CP* cg = reinterpret_cast<CP*>(codes) + n * 2 * vpr;
    CP* cu = cg + vpr;
    float* sg = scale_inv + n * 2 * (vpr / kLanes);
    float* su = sg + vpr / kLanes;
    uint32_t key = 0;
    for (int64_t base = 0; base < vpr; base += int64_t(nt) * kUnroll) {
      P gv[kUnroll], uv[kUnroll];
#pragma unroll
      for (int r = 0; r < kUnroll; ++r) {
        const int64_t j = base + tid + int64_t(r) * nt;
        gv[r] = P{};
        uv[r] = P{};
        if (j < vpr) {
          gv[r] = g[j];
          uv[r] = u[j];
        }
      }
#pragma unroll
      for (int r = 0; r < kUnroll; ++r) {
        const int64_t j = base + tid + int64_t(r) * nt;
        const uint32_t kg = group_key(gv[r]), ku = group_key(uv[r]);
        if (j < vpr) {
          P o;
#pragma unroll
          for (int k = 0; k < kVec; ++k) o.v[k] = E::store(swiglu_value(E::load(gv[r].v[k]), E::load(uv[r].v[k])));
          row_maxima::fold(key, o);
          yr[j] = o;
          const bool head = j % kLanes == 0;
          encode(gv[r], kg, cg + j, sg + j / kLanes, head);
          encode(uv[r], ku, cu + j, su + j / kLanes, head);
        }
      }
    }
    row_maxima::store(key, warp_keys, row_max + n);
  }
}

/// dgu (rows [dgate | dup], gu's layout) from dy [N, F] (vector i) and gu; items as in swiglu_packed_kernel.
template <typename S, int kVec>
__global__ __launch_bounds__(kThreads) void swiglu_packed_backward_kernel(const S* __restrict__ dy,
                                                                          const S* __restrict__ gu,
                                                                          S* __restrict__ dgu, int64_t vpr,
                                                                          int64_t items) {
  using E = Elem<S>;
  using A = typename E::A;
  using P = Pack<S, kVec>;
  const int64_t stride = grid_threads();
  const P* dyp = reinterpret_cast<const P*>(dy);
  const P* gup = reinterpret_cast<const P*>(gu);
  P* dgup = reinterpret_cast<P*>(dgu);
  for (int64_t first = global_thread(); first < items; first += stride * kUnroll) {
    P d[kUnroll], g[kUnroll], u[kUnroll];
    int64_t at[kUnroll];  // vector index of the gate half in gu / dgu
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const int64_t i = first + r * stride;
      at[r] = 0;
      if (i < items) {
        const int64_t n = i / vpr;
        at[r] = n * 2 * vpr + (i - n * vpr);
        d[r] = dyp[i];
        g[r] = gup[at[r]];
        u[r] = gup[at[r] + vpr];
      }
    }
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const int64_t i = first + r * stride;
      if (i < items) {
        P og, ou;
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          A dg, du;
          swiglu_grads(E::load(d[r].v[k]), E::load(g[r].v[k]), E::load(u[r].v[k]), dg, du);
          og.v[k] = E::store(dg);
          ou.v[k] = E::store(du);
        }
        dgup[at[r]] = og;
        dgup[at[r] + vpr] = ou;
      }
    }
  }
}

/// swiglu_packed_backward with the maxima of dgu's rows (both halves), laid out as swiglu_packed_row_max_kernel
/// (a block per row, its threads along the row's vpr vectors); the same dgu as swiglu_packed_backward_kernel.
/// gu as S values, or COAT's compressed copy restored in registers (pack_source.cuh): the same values, without
/// writing and reading a restored gu.
template <typename S, int kVec, bool kCodes>
__global__ __launch_bounds__(kThreads) void swiglu_packed_backward_row_max_kernel(const S* __restrict__ dy,
                                                                                  PackSource<S, kVec, kCodes> gu,
                                                                                  S* __restrict__ dgu,
                                                                                  float* __restrict__ row_max,
                                                                                  int64_t vpr, int64_t rows) {
  using E = Elem<S>;
  using A = typename E::A;
  using P = Pack<S, kVec>;
  __shared__ uint32_t warp_keys[kThreads / kWarp];
  const int tid = threadIdx.x, nt = blockDim.x;
  for (int64_t n = blockIdx.x; n < rows; n += gridDim.x) {
    const P* d = reinterpret_cast<const P*>(dy) + n * vpr;
    const int64_t g = n * 2 * vpr;  // the row's first pack in gu and dgu
    P* dg = reinterpret_cast<P*>(dgu) + g;
    uint32_t key = 0;
    for (int64_t first = tid; first < vpr; first += int64_t(nt) * kUnroll) {
      P dv[kUnroll], gv[kUnroll], uv[kUnroll];
#pragma unroll
      for (int r = 0; r < kUnroll; ++r) {
        const int64_t j = first + int64_t(r) * nt;
        if (j < vpr) {
          dv[r] = d[j];
          gv[r] = gu.load(g + j);
          uv[r] = gu.load(g + j + vpr);
        }
      }
#pragma unroll
      for (int r = 0; r < kUnroll; ++r) {
        const int64_t j = first + int64_t(r) * nt;
        if (j < vpr) {
          P og, ou;
#pragma unroll
          for (int k = 0; k < kVec; ++k) {
            A dgv, duv;
            swiglu_grads(E::load(dv[r].v[k]), E::load(gv[r].v[k]), E::load(uv[r].v[k]), dgv, duv);
            og.v[k] = E::store(dgv);
            ou.v[k] = E::store(duv);
          }
          row_maxima::fold(key, og);
          row_maxima::fold(key, ou);
          dg[j] = og;
          dg[j + vpr] = ou;
        }
      }
    }
    if (row_max != nullptr) row_maxima::store(key, warp_keys, row_max + n);  // uniform over the block
  }
}

}  // namespace

void swiglu(const Tensor& gate, const Tensor& up, Tensor& y) {
  const int64_t n = gate.numel();
  if (n == 0) return;
  dispatch_storage(gate.dtype(), "swiglu", [&](auto s) {
    using S = decltype(s);
    const S* gp = gate.data<S>();
    const S* upp = up.data<S>();
    S* yp = y.data<S>();
    const bool vec = aligned16(gp) && aligned16(upp) && aligned16(yp);
    const int vec_elems = vec ? kVec16<S> : 1;
    const unsigned grid = grid_for(y, (n / vec_elems + kUnroll - 1) / kUnroll, kThreads);
    if (vec) {
      swiglu_kernel<S, kVec16<S>><<<grid, kThreads, 0, stream_of(y)>>>(gp, upp, yp, n);
    } else {
      swiglu_kernel<S, 1><<<grid, kThreads, 0, stream_of(y)>>>(gp, upp, yp, n);
    }
    COAT_CUDA_CHECK_LAST_LAUNCH();
  });
}

void swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up, Tensor& dgate, Tensor& dup) {
  const int64_t n = gate.numel();
  if (n == 0) return;
  dispatch_storage(gate.dtype(), "swiglu_backward", [&](auto s) {
    using S = decltype(s);
    const S* dyp = dy.data<S>();
    const S* gp = gate.data<S>();
    const S* upp = up.data<S>();
    S* dgp = dgate.data<S>();
    S* dup_p = dup.data<S>();
    const bool vec = aligned16(dyp) && aligned16(gp) && aligned16(upp) && aligned16(dgp) && aligned16(dup_p);
    const int vec_elems = vec ? kVec16<S> : 1;
    const unsigned grid = grid_for(dgate, (n / vec_elems + kUnroll - 1) / kUnroll, kThreads);
    if (vec) {
      swiglu_backward_kernel<S, kVec16<S>><<<grid, kThreads, 0, stream_of(dgate)>>>(dyp, gp, upp, dgp, dup_p, n);
    } else {
      swiglu_backward_kernel<S, 1><<<grid, kThreads, 0, stream_of(dgate)>>>(dyp, gp, upp, dgp, dup_p, n);
    }
    COAT_CUDA_CHECK_LAST_LAUNCH();
  });
}

namespace {

/// The launch of a row kernel (a block per row): blocks of the fewest warps (at most kThreads) that give each
/// thread kUnroll of the row's vpr vectors.
struct RowLaunch {
  int threads;
  unsigned grid;
};
RowLaunch row_launch(const Tensor& out, int64_t rows, int64_t vpr) {
  const int64_t per_thread = (vpr + kUnroll - 1) / kUnroll;
  const int threads = static_cast<int>(std::min<int64_t>(kThreads, (per_thread + kWarp - 1) / kWarp * kWarp));
  return {threads, grid_for(out, rows * threads, threads)};
}

/// Runs body<S>() for the f32 and bf16 storages that row maxima are written for; NotImplemented for f64.
template <typename Body>
void dispatch_row_max(DType dtype, const char* op, Body&& body) {
  dispatch_storage(dtype, op, [&](auto s) {
    using S = decltype(s);
    if constexpr (std::is_same_v<S, double>) {
      COAT_CHECK(false, NotImplemented, "[", op, "] cuda: row maxima are written for f32 and bf16 outputs, not f64");
    } else {
      body(s);
    }
  });
}

/// Row maxima of empty rows: 0. Returns whether the rows were empty (or there were none).
bool empty_rows(Tensor& row_max, int64_t f, const Tensor& out) {
  const int64_t rows = row_max.numel();
  if (rows > 0 && f == 0) COAT_CUDA_CHECK(cudaMemsetAsync(row_max.data_ptr(), 0, rows * sizeof(float), stream_of(out)));
  return rows == 0 || f == 0;
}

/// swiglu_packed with row maxima: the row kernel.
void swiglu_packed_with_row_max(const Tensor& gu, Tensor& y, Tensor& row_max) {
  const int64_t rows = row_max.numel(), f = y.size(-1);
  if (empty_rows(row_max, f, y)) return;
  dispatch_row_max(gu.dtype(), "swiglu_packed", [&](auto s) {
    using S = decltype(s);
    const S* gp = gu.data<S>();
    S* yp = y.data<S>();
    const bool vec = f % kVec16<S> == 0 && aligned16(gp) && aligned16(yp);
    const int64_t vpr = f / (vec ? kVec16<S> : 1);
    const RowLaunch l = row_launch(y, rows, vpr);
    float* mp = row_max.data<float>();
    if (vec) {
      swiglu_packed_row_max_kernel<S, kVec16<S>><<<l.grid, l.threads, 0, stream_of(y)>>>(gp, yp, mp, vpr, rows);
    } else {
      swiglu_packed_row_max_kernel<S, 1><<<l.grid, l.threads, 0, stream_of(y)>>>(gp, yp, mp, vpr, rows);
    }
    COAT_CUDA_CHECK_LAST_LAUNCH();
  });
}

/// swiglu_packed_backward by the row kernel: with the maxima of dgu's rows (row_max not null) and/or gu
/// restored from its compressed copy (codes and scale_inv defined; gu undefined then).
void swiglu_packed_backward_rows(const Tensor& dy, const Tensor& gu, const Tensor& codes, const Tensor& scale_inv,
                                 Tensor& dgu, Tensor* row_max) {
  const int64_t f = dy.size(-1), rows = f == 0 ? 0 : dy.numel() / f;
  if (row_max != nullptr && empty_rows(*row_max, f, dgu)) return;
  if (rows == 0) return;
  const bool compressed = codes.defined();
  dispatch_row_max(dgu.dtype(), "swiglu_packed_backward", [&](auto s) {
    using S = decltype(s);
    const S* dyp = dy.data<S>();
    const S* gp = compressed ? nullptr : gu.data<S>();
    const uint8_t* cp = compressed ? static_cast<const uint8_t*>(codes.data_ptr()) : nullptr;
    const float* sp = compressed ? scale_inv.data<float>() : nullptr;
    S* dgp = dgu.data<S>();
    const bool vec = f % kVec16<S> == 0 && aligned16(dyp) && aligned16(dgp) &&
                     (compressed ? reinterpret_cast<uintptr_t>(cp) % kVec16<S> == 0 : aligned16(gp));
    const int64_t vpr = f / (vec ? kVec16<S> : 1);
    const RowLaunch l = row_launch(dgu, rows, vpr);
    float* mp = row_max != nullptr ? row_max->data<float>() : nullptr;
    const auto launch = [&](auto vec_tag, auto codes_tag) {
      constexpr int kV = decltype(vec_tag)::value;
      constexpr bool kC = decltype(codes_tag)::value;
      const PackSource<S, kV, kC> source{gp, cp, sp};
      swiglu_packed_backward_row_max_kernel<S, kV, kC>
          <<<l.grid, l.threads, 0, stream_of(dgu)>>>(dyp, source, dgp, mp, vpr, rows);
    };
    using Yes = std::true_type;
    using No = std::false_type;
    using V = std::integral_constant<int, kVec16<S>>;
    using One = std::integral_constant<int, 1>;
    if (vec) {
      compressed ? launch(V{}, Yes{}) : launch(V{}, No{});
    } else {
      compressed ? launch(One{}, Yes{}) : launch(One{}, No{});
    }
    COAT_CUDA_CHECK_LAST_LAUNCH();
  });
}

}  // namespace

bool swiglu_packed_compress(const Tensor& gu, Tensor& y, Tensor& row_max, Tensor& codes, Tensor& scale_inv) {
  const int64_t rows = row_max.numel(), f = y.size(-1);
  if (rows == 0 || f == 0 || f % 16 != 0) return false;
  bool done = false;
  dispatch_row_max(gu.dtype(), "swiglu_packed", [&](auto s) {
    using S = decltype(s);
    const S* gp = gu.data<S>();
    S* yp = y.data<S>();
    uint8_t* cp = static_cast<uint8_t*>(codes.data_ptr());
    if (!(aligned16(gp) && aligned16(yp) && reinterpret_cast<uintptr_t>(cp) % kVec16<S> == 0)) return;
    const int64_t vpr = f / kVec16<S>;
    const RowLaunch l = row_launch(y, rows, vpr);
    swiglu_packed_compress_kernel<S, kVec16<S>><<<l.grid, l.threads, 0, stream_of(y)>>>(
        gp, yp, row_max.data<float>(), cp, scale_inv.data<float>(), vpr, rows);
    COAT_CUDA_CHECK_LAST_LAUNCH();
    done = true;
  });
  return done;
}

void swiglu_packed(const Tensor& gu, Tensor& y, Tensor* row_max) {
  if (row_max != nullptr) {
    swiglu_packed_with_row_max(gu, y, *row_max);
    return;
  }
  const int64_t n = y.numel();
  if (n == 0) return;
  const int64_t f = y.size(-1);
  dispatch_storage(gu.dtype(), "swiglu_packed", [&](auto s) {
    using S = decltype(s);
    const S* gp = gu.data<S>();
    S* yp = y.data<S>();
    const bool vec = f % kVec16<S> == 0 && aligned16(gp) && aligned16(yp);
    const int vec_elems = vec ? kVec16<S> : 1;
    const int64_t vpr = f / vec_elems, items = n / vec_elems;
    const unsigned grid = grid_for(y, (items + kUnroll - 1) / kUnroll, kThreads);
    if (vec) {
      swiglu_packed_kernel<S, kVec16<S>><<<grid, kThreads, 0, stream_of(y)>>>(gp, yp, vpr, items);
    } else {
      swiglu_packed_kernel<S, 1><<<grid, kThreads, 0, stream_of(y)>>>(gp, yp, vpr, items);
    }
    COAT_CUDA_CHECK_LAST_LAUNCH();
  });
}

void swiglu_packed_backward_compressed(const Tensor& dy, const Tensor& codes, const Tensor& scale_inv, Tensor& dgu,
                                       Tensor* row_max) {
  swiglu_packed_backward_rows(dy, Tensor(), codes, scale_inv, dgu, row_max);
}

void swiglu_packed_backward(const Tensor& dy, const Tensor& gu, Tensor& dgu, Tensor* row_max) {
  if (row_max != nullptr) {
    swiglu_packed_backward_rows(dy, gu, Tensor(), Tensor(), dgu, row_max);
    return;
  }
  const int64_t n = dy.numel();
  if (n == 0) return;
  const int64_t f = dy.size(-1);
  dispatch_storage(gu.dtype(), "swiglu_packed_backward", [&](auto s) {
    using S = decltype(s);
    const S* dyp = dy.data<S>();
    const S* gp = gu.data<S>();
    S* dgp = dgu.data<S>();
    const bool vec = f % kVec16<S> == 0 && aligned16(dyp) && aligned16(gp) && aligned16(dgp);
    const int vec_elems = vec ? kVec16<S> : 1;
    const int64_t vpr = f / vec_elems, items = n / vec_elems;
    const unsigned grid = grid_for(dgu, (items + kUnroll - 1) / kUnroll, kThreads);
    if (vec) {
      swiglu_packed_backward_kernel<S, kVec16<S>>
          <<<grid, kThreads, 0, stream_of(dgu)>>>(dyp, gp, dgp, vpr, items);
    } else {
      swiglu_packed_backward_kernel<S, 1><<<grid, kThreads, 0, stream_of(dgu)>>>(dyp, gp, dgp, vpr, items);
    }
    COAT_CUDA_CHECK_LAST_LAUNCH();
  });
}

}  // namespace coat::cuda
