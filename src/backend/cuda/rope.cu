// CUDA kernel: rotary position embedding (HF rotate-half), then its launcher. Block (t, chunk) rotates
// a chunk of the B * R rotated heads (R = rotary_heads <= H) at position t: each thread first loads its
// kItems (x[i], x[i + Dh/2]) vector pairs, then the block computes the cos/sin of position t for the Dh/2
// frequencies in double (the CPU's formula, rounded once to float) into shared memory, then rotates and
// stores. The Dh/2 inverse frequencies (computed on the host, in double) travel by value in the kernel's
// parameters (a __grid_constant__ struct: read in place from the constant bank, no copy per thread): no
// table lives in device memory and no copy precedes the launch. A thread reads a pair before it writes it
// and no two threads share one, so y may be x (in place; no __restrict__ on them for that). Out of place,
// the heads >= R are copied by a strided cudaMemcpy2DAsync.
// With row maxima (the backward of a packed q/k/v projection feeding an FP8 linear), a row kernel instead:
// one block per token row [H, Dh], which rotates its R heads, reads (and out of place copies) the others,
// and writes the row's max |y| as stored (row_max.cuh).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <span>
#include <type_traits>

#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/device_vector.cuh"
#include "coat/backend/cuda/launch.h"
#include "coat/backend/cuda/rope.h"
#include "coat/backend/cuda/row_max.cuh"

namespace coat::cuda {
namespace {

constexpr int kThreads = 256;
/// Vector pairs per thread loaded before the cos/sin table is computed.
constexpr int kItems = 4;
/// Blocks per position at most (grid.y); further chunks are looped over.
constexpr int64_t kMaxChunks = 65535;
/// Frequencies a launch carries: Dh <= 512 (2 KiB of the 4 KiB of kernel parameters).
constexpr int64_t kMaxPairs = 256;

struct InverseFrequencies {
  double value[kMaxPairs];
};

/// The cos/sin table for position p into cos_t, sin_t (shared, [half] each), by the block's threads.
template <typename A>
__device__ inline void position_table(A* cos_t, A* sin_t, int64_t half, int64_t p,
                                      const InverseFrequencies& inv_freq, double sign) {
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    const double angle = static_cast<double>(p) * inv_freq.value[i];
    double s, c;
    sincos(angle, &s, &c);
    cos_t[i] = static_cast<A>(c);
    sin_t[i] = static_cast<A>(sign * s);
  }
}

/// One vector pair (x[i], x[i + Dh/2]) for frequencies first .. first + kVec - 1 turned by the table's angles.
template <typename S, int kVec>
__device__ inline void rotate_pair(const Pack<S, kVec>& lo, const Pack<S, kVec>& hi, const acc_t<S>* cos_t,
                                   const acc_t<S>* sin_t, int64_t first, Pack<S, kVec>& out_lo,
                                   Pack<S, kVec>& out_hi) {
  using E = Elem<S>;
  using A = acc_t<S>;
  using AP = Pack<A, kVec>;
  const AP c = *reinterpret_cast<const AP*>(cos_t + first);
  const AP s = *reinterpret_cast<const AP*>(sin_t + first);
#pragma unroll
  for (int k = 0; k < kVec; ++k) {
    const A a = E::load(lo.v[k]), b = E::load(hi.v[k]);
    out_lo.v[k] = E::store(sub_rn(mul_rn(a, c.v[k]), mul_rn(b, s.v[k])));
    out_hi.v[k] = E::store(add_rn(mul_rn(b, c.v[k]), mul_rn(a, s.v[k])));
  }
}

/// x, y [B, T, H, Dh] with half = Dh / 2; item j of position t is vector v = j % (half / kVec) of head
/// h = (j / (half / kVec)) % R of batch b = j / (R * half / kVec), R = rotary heads. Shared memory:
/// cos[half], sin[half] in A.
template <typename S, int kVec>
__global__ __launch_bounds__(kThreads) void rope_kernel(const S* x, S* y, int64_t t_count, int64_t heads,
                                                        int64_t rotary, int64_t dh, int64_t items,
                                                        const __grid_constant__ InverseFrequencies inv_freq,
                                                        int64_t position_offset, double sign) {
  using A = acc_t<S>;
  using P = Pack<S, kVec>;
  extern __shared__ __align__(32) unsigned char smem[];
  const int64_t half = dh / 2;
  A* cos_t = reinterpret_cast<A*>(smem);
  A* sin_t = cos_t + half;
  const int64_t t = blockIdx.x;
  const int64_t vecs_per_head = half / kVec;
  const int64_t per_block = int64_t(kThreads) * kItems;
  bool have_table = false;
  // The loop bound is uniform over the block, so every thread reaches the barrier inside.
  for (int64_t start = blockIdx.y * per_block; start < items; start += int64_t(gridDim.y) * per_block) {
    P lo[kItems], hi[kItems];
    int64_t base[kItems];
    int first[kItems];  // first frequency index of the vector
#pragma unroll
    for (int u = 0; u < kItems; ++u) {
      const int64_t j = start + int64_t(u) * kThreads + threadIdx.x;
      base[u] = -1;
      first[u] = 0;
      if (j < items) {
        const int64_t v = j % vecs_per_head;
        const int64_t bh = j / vecs_per_head;
        const int64_t h = bh % rotary, b = bh / rotary;
        first[u] = static_cast<int>(v * kVec);
        base[u] = ((b * t_count + t) * heads + h) * dh + first[u];
        lo[u] = *reinterpret_cast<const P*>(x + base[u]);
        hi[u] = *reinterpret_cast<const P*>(x + base[u] + half);
      }
    }
    if (!have_table) {
      position_table(cos_t, sin_t, half, t + position_offset, inv_freq, sign);
      __syncthreads();
      have_table = true;
    }
#pragma unroll
    for (int u = 0; u < kItems; ++u) {
      if (base[u] < 0) continue;
      P out_lo, out_hi;
      rotate_pair(lo[u], hi[u], cos_t, sin_t, first[u], out_lo, out_hi);
      *reinterpret_cast<P*>(y + base[u]) = out_lo;
      *reinterpret_cast<P*>(y + base[u] + half) = out_hi;
    }
  }
}

/// One token row n of x, y [B * T, H, Dh] with the block's cos/sin table of its position: the R * half / kVec
/// vector pairs rotated (kUnroll in flight a thread), the (H - R) * Dh / kVec vectors of the other heads read
/// (and copied when y is not x), every stored value folded into the row's key; row_max[n] = max |y| of the
/// row. Every thread of the block calls it (row_maxima::store holds barriers; its first one also orders this
/// row's table reads before a later table write).
template <typename S, int kVec>
__device__ inline void rope_row(const S* x, S* y, float* row_max, int64_t n, int64_t heads, int64_t rotary,
                                int64_t dh, const acc_t<S>* cos_t, const acc_t<S>* sin_t, uint32_t* warp_keys) {
  using P = Pack<S, kVec>;
  constexpr int kUnroll = 2;
  const int64_t half = dh / 2, per_half = half / kVec;
  const int64_t pairs = rotary * per_half, plain = (heads - rotary) * dh / kVec;
  const int nt = blockDim.x;
  const S* xr = x + n * heads * dh;
  S* yr = y + n * heads * dh;
  uint32_t key = 0;
  for (int64_t first = threadIdx.x; first < pairs; first += int64_t(nt) * kUnroll) {
    P lo[kUnroll], hi[kUnroll];
    int64_t base[kUnroll], freq[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j = first + int64_t(u) * nt;
      base[u] = -1;
      if (j < pairs) {
        const int64_t h = j / per_half;
        freq[u] = (j - h * per_half) * kVec;
        base[u] = h * dh + freq[u];
        lo[u] = *reinterpret_cast<const P*>(xr + base[u]);
        hi[u] = *reinterpret_cast<const P*>(xr + base[u] + half);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (base[u] < 0) continue;
      P out_lo, out_hi;
      rotate_pair(lo[u], hi[u], cos_t, sin_t, freq[u], out_lo, out_hi);
      row_maxima::fold(key, out_lo);
      row_maxima::fold(key, out_hi);
      *reinterpret_cast<P*>(yr + base[u]) = out_lo;
      *reinterpret_cast<P*>(yr + base[u] + half) = out_hi;
    }
  }
  const P* xp = reinterpret_cast<const P*>(xr + rotary * dh);
  P* yp = reinterpret_cast<P*>(yr + rotary * dh);
  for (int64_t j = threadIdx.x; j < plain; j += nt) {
    const P v = xp[j];
    row_maxima::fold(key, v);
    if (yp != xp) yp[j] = v;
  }
  row_maxima::store(key, warp_keys, row_max + n);
}

/// rope_kernel's rotation with the rows' maxima: block b takes positions t = b, b + gridDim.x, ... of x, y
/// [B, T, H, Dh], computes the cos/sin table of t once (in double, as rope_kernel) and then rotates the B token
/// rows of position t in turn (rope_row). Same per-element arithmetic as rope_kernel. y may be x.
template <typename S, int kVec>
__global__ __launch_bounds__(kThreads) void rope_row_max_kernel(const S* x, S* y, float* __restrict__ row_max,
                                                                int64_t b_count, int64_t t_count, int64_t heads,
                                                                int64_t rotary, int64_t dh,
                                                                const __grid_constant__ InverseFrequencies inv_freq,
                                                                int64_t position_offset, double sign) {
  using A = acc_t<S>;
  extern __shared__ __align__(32) unsigned char smem[];
  __shared__ uint32_t warp_keys[kThreads / row_maxima::kWarp];
  const int64_t half = dh / 2;
  A* cos_t = reinterpret_cast<A*>(smem);
  A* sin_t = cos_t + half;
  for (int64_t t = blockIdx.x; t < t_count; t += gridDim.x) {
    // The previous position's last row_maxima::store began with a barrier after every read of its table.
    position_table(cos_t, sin_t, half, t + position_offset, inv_freq, sign);
    __syncthreads();
    for (int64_t b = 0; b < b_count; ++b)
      rope_row<S, kVec>(x, y, row_max, b * t_count + t, heads, rotary, dh, cos_t, sin_t, warp_keys);
  }
}

}  // namespace

namespace {

/// The row kernel (rope_row_max_kernel) for x, y [B, T, H, Dh] with row_max F32 [B * T].
template <typename S>
void rope_rows(const Tensor& x, const InverseFrequencies& freqs, int64_t position_offset, double sign, int64_t rotary,
               Tensor& y, Tensor& row_max) {
  const int64_t b_count = x.size(0), t_count = x.size(1), heads = x.size(2), dh = x.size(3);
  const S* xp = x.data<S>();
  S* yp = y.data<S>();
  const bool vec = (dh / 2) % kVec16<S> == 0 && aligned16(xp) && aligned16(yp);
  const size_t smem = static_cast<size_t>(dh) * sizeof(acc_t<S>);
  const int64_t vpr = heads * dh / (vec ? kVec16<S> : 1) / 2;  // about a pair or a plain vector per thread
  const int threads = static_cast<int>(std::clamp<int64_t>((vpr + 31) / 32 * 32, 32, kThreads));
  const unsigned grid = grid_for(y, t_count * threads, threads);
  float* mp = row_max.data<float>();
  if (vec) {
    rope_row_max_kernel<S, kVec16<S>><<<grid, threads, smem, stream_of(y)>>>(
        xp, yp, mp, b_count, t_count, heads, rotary, dh, freqs, position_offset, sign);
  } else {
    rope_row_max_kernel<S, 1><<<grid, threads, smem, stream_of(y)>>>(xp, yp, mp, b_count, t_count, heads, rotary, dh,
                                                                     freqs, position_offset, sign);
  }
  COAT_CUDA_CHECK_LAST_LAUNCH();
}

}  // namespace

void rope(const Tensor& x, std::span<const double> inv_freq, int64_t position_offset, bool inverse,
          int64_t rotary_heads, Tensor& y, Tensor* row_max) {
  const int64_t b_count = x.size(0), t_count = x.size(1), heads = x.size(2), dh = x.size(3);
  if (row_max != nullptr && row_max->numel() > 0 && heads * dh == 0)
    COAT_CUDA_CHECK(cudaMemsetAsync(row_max->data_ptr(), 0, row_max->numel() * sizeof(float), stream_of(y)));
  if (x.numel() == 0) return;
  const int64_t half = dh / 2;
  COAT_CHECK(half <= kMaxPairs, NotImplemented, "[rope] cuda: head dimension ", dh, " is over the ",
             2 * kMaxPairs, " whose inverse frequencies a launch carries in its parameters");
  InverseFrequencies freqs{};
  std::copy(inv_freq.begin(), inv_freq.end(), freqs.value);
  const int64_t rotary = rotary_heads;
  dispatch_storage(x.dtype(), "rope", [&](auto s) {
    using S = decltype(s);
    using A = acc_t<S>;
    const size_t smem = static_cast<size_t>(dh) * sizeof(A);  // <= 4 KiB for Dh <= 512
    const S* xp = x.data<S>();
    S* yp = y.data<S>();
    const bool vec = half % kVec16<S> == 0 && aligned16(xp) && aligned16(yp);
    const double sign = inverse ? -1.0 : 1.0;
    if (row_max != nullptr) {
      if constexpr (std::is_same_v<S, double>) {
        COAT_CHECK(false, NotImplemented, "[rope] cuda: row maxima are written for f32 and bf16 outputs, not f64");
      } else {
        rope_rows<S>(x, freqs, position_offset, sign, rotary, y, *row_max);
      }
      return;
    }
    if (xp != yp && rotary < heads) {  // the unrotated heads: rows of (H - R) * Dh elements, one per token
      const size_t elem = sizeof(S);
      COAT_CUDA_CHECK(cudaMemcpy2DAsync(
          yp + rotary * dh, static_cast<size_t>(heads * dh) * elem, xp + rotary * dh,
          static_cast<size_t>(heads * dh) * elem, static_cast<size_t>((heads - rotary) * dh) * elem,
          static_cast<size_t>(b_count * t_count), cudaMemcpyDeviceToDevice, stream_of(y)));
    }
    if (rotary == 0) return;
    auto launch = [&](auto kernel, int vec_elems) {
      const int64_t items = b_count * rotary * (half / vec_elems);
      const int64_t per_block = int64_t(kThreads) * kItems;
      const int64_t chunks = std::min((items + per_block - 1) / per_block, kMaxChunks);
      const dim3 grid(static_cast<unsigned>(t_count), static_cast<unsigned>(chunks));
      kernel<<<grid, kThreads, smem, stream_of(y)>>>(xp, yp, t_count, heads, rotary, dh, items, freqs,
                                                     position_offset, sign);
      COAT_CUDA_CHECK_LAST_LAUNCH();
    };
    if (vec) {
      launch(rope_kernel<S, kVec16<S>>, kVec16<S>);
    } else {
      launch(rope_kernel<S, 1>, 1);
    }
  });
}

}  // namespace coat::cuda
