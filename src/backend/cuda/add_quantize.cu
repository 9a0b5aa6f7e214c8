// CUDA kernel of the fused residual add + FP8 group quantisation, then its launcher. Memory-bound: each group
// is handled by a team of lanes (a power of two, at most a warp) with 16-byte vectors where alignment allows;
// a lane keeps up to kCachedVectors vectors of sums in registers between the amax and the quantisation
// (longer groups re-read the sums the lane itself stored). Every value goes through the scalar math of
// quantize_math.h, as in the CPU reference, so sums, codes and scales are byte-identical to it.
#include <cuda_runtime.h>

#include <cstdint>

#include "coat/backend/cuda/add_quantize.h"
#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/device_vector.cuh"
#include "coat/backend/cuda/launch.h"
#include "coat/backend/quantize_math.h"

namespace coat::cuda {
namespace {

using namespace coat::fp8math;

constexpr int kThreads = 256;
constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kCachedVectors = 4;

__device__ inline int64_t global_thread() { return blockIdx.x * int64_t(blockDim.x) + threadIdx.x; }
__device__ inline int64_t grid_threads() { return int64_t(gridDim.x) * blockDim.x; }

/// sum = a + b of one vector, rounded once to T, folded into the lane's amax key.
template <DType T, int Vec>
__device__ inline Pack<storage_t<T>, Vec> add_vector(const Pack<storage_t<T>, Vec>& a,
                                                     const Pack<storage_t<T>, Vec>& b, uint32_t& key) {
  Pack<storage_t<T>, Vec> s;
#pragma unroll
  for (int v = 0; v < Vec; ++v) {
    s.v[v] = store_float<T>(add_rn(load_float<T>(a.v[v]), load_float<T>(b.v[v])));
    key = max_key(key, amax_key(load_float<T>(s.v[v])));
  }
  return s;
}

template <DType T, DType Fmt, int Vec>
__device__ inline Pack<uint8_t, Vec> quantize_vector(const Pack<storage_t<T>, Vec>& s, float scale,
                                                     Fp8Saturation sat) {
  Pack<uint8_t, Vec> q;
#pragma unroll
  for (int v = 0; v < Vec; ++v) q.v[v] = quantize_value<Fmt>(load_float<T>(s.v[v]), scale, sat);
  return q;
}

/// A team of `team` lanes per group of group_size contiguous elements, as Vec-element vectors: the sums are
/// stored and cached, the team's amax is a shuffle reduction, then the lane quantises its vectors.
template <DType T, DType Fmt, int Vec>
__global__ __launch_bounds__(kThreads) void add_quantize_group_kernel(const storage_t<T>* __restrict__ a,
                                                                      const storage_t<T>* __restrict__ b,
                                                                      storage_t<T>* sum, int64_t num_groups,
                                                                      int64_t group_size, int team,
                                                                      Fp8Saturation sat, uint8_t* __restrict__ codes,
                                                                      float* __restrict__ scale_inv) {
  using P = Pack<storage_t<T>, Vec>;
  using CodePack = Pack<uint8_t, Vec>;
  const int lane = threadIdx.x % kWarpSize;
  const int team_lane = lane % team;
  const int teams_per_warp = kWarpSize / team;
  const int64_t warp = global_thread() / kWarpSize;
  const int64_t warps = grid_threads() / kWarpSize;
  const int64_t vecs = group_size / Vec;
  // The loop bound is uniform across the warp, so that every lane reaches the shuffles below.
  for (int64_t first = warp * teams_per_warp; first < num_groups; first += warps * teams_per_warp) {
    const int64_t g = first + lane / team;
    const bool active = g < num_groups;
    const int64_t offset = (active ? g : 0) * group_size;
    const P* ga = reinterpret_cast<const P*>(a + offset);
    const P* gb = reinterpret_cast<const P*>(b + offset);
    P* gs = reinterpret_cast<P*>(sum + offset);
    P cache[kCachedVectors];
    uint32_t key = 0;
    if (active) {
      P ca[kCachedVectors], cb[kCachedVectors];
#pragma unroll
      for (int c = 0; c < kCachedVectors; ++c) {
        const int64_t j = team_lane + int64_t(c) * team;
        if (j < vecs) {
          ca[c] = ga[j];
          cb[c] = gb[j];
        }
      }
#pragma unroll
      for (int c = 0; c < kCachedVectors; ++c) {
        const int64_t j = team_lane + int64_t(c) * team;
        if (j < vecs) {
          cache[c] = add_vector<T, Vec>(ca[c], cb[c], key);
          gs[j] = cache[c];
        }
      }
      for (int64_t j = team_lane + int64_t(kCachedVectors) * team; j < vecs; j += team)
        gs[j] = add_vector<T, Vec>(ga[j], gb[j], key);
    }
    for (int o = team / 2; o > 0; o /= 2) key = max_key(key, __shfl_xor_sync(kFullMask, key, o));
    if (!active) continue;
    const float scale = scale_from_amax(amax_from_key(key), fp8_max(Fmt));
    if (team_lane == 0) scale_inv[g] = scale_inv_from_scale(scale);
    CodePack* gc = reinterpret_cast<CodePack*>(codes + offset);
#pragma unroll
    for (int c = 0; c < kCachedVectors; ++c) {
      const int64_t j = team_lane + int64_t(c) * team;
      if (j < vecs) gc[j] = quantize_vector<T, Fmt, Vec>(cache[c], scale, sat);
    }
    // The lane's own stores above: program order makes them visible to its loads.
    for (int64_t j = team_lane + int64_t(kCachedVectors) * team; j < vecs; j += team)
      gc[j] = quantize_vector<T, Fmt, Vec>(gs[j], scale, sat);
  }
}

/// Lanes that share one group: the fewest (a power of two, at most a warp) that leave each lane at most
/// kCachedVectors vectors.
int team_size(int64_t vectors_per_group) {
  int team = 1;
  while (team < kWarpSize && int64_t(team) * kCachedVectors < vectors_per_group) team *= 2;
  return team;
}

bool aligned_to(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

}  // namespace

void add_quantize_per_group(const Tensor& a, const Tensor& b, int64_t group_size, Fp8Saturation sat, Tensor& sum,
                            Tensor& codes, Tensor& scale_inv) {
  constexpr const char* op = "add_quantize_per_group";
  check_add_quantize_per_group(a, b, group_size, sum, codes, scale_inv, a.device());
  COAT_ARG_CHECK(a.device().is_cuda(), op, "input ", a.str(), " is not on a CUDA device");
  const int64_t groups = a.numel() / group_size;
  if (groups == 0) return;
  cudaStream_t stream = stream_of(sum);
  dispatch_float_dtype(a.dtype(), op, [&](auto t) {
    constexpr DType T = decltype(t)::value;
    using S = storage_t<T>;
    constexpr int kVec = static_cast<int>(16 / sizeof(S));
    const bool vectorized = group_size % kVec == 0 && aligned_to(a.data_ptr(), 16) &&
                            aligned_to(b.data_ptr(), 16) && aligned_to(sum.data_ptr(), 16) &&
                            aligned_to(codes.data_ptr(), kVec);
    const int vec = vectorized ? kVec : 1;
    const int team = team_size(group_size / vec);
    const int64_t threads = (groups + kWarpSize / team - 1) / (kWarpSize / team) * kWarpSize;
    const unsigned blocks = grid_for(sum, threads, kThreads);
    const S* ap = static_cast<const S*>(a.data_ptr());
    const S* bp = static_cast<const S*>(b.data_ptr());
    S* sp = static_cast<S*>(sum.data_ptr());
    uint8_t* cp = static_cast<uint8_t*>(codes.data_ptr());
    float* sip = scale_inv.data<float>();
    dispatch_fp8_format(codes.dtype(), op, [&](auto f) {
      constexpr DType Fmt = decltype(f)::value;
      if (vectorized) {
        add_quantize_group_kernel<T, Fmt, kVec>
            <<<blocks, kThreads, 0, stream>>>(ap, bp, sp, groups, group_size, team, sat, cp, sip);
      } else {
        add_quantize_group_kernel<T, Fmt, 1>
            <<<blocks, kThreads, 0, stream>>>(ap, bp, sp, groups, group_size, team, sat, cp, sip);
      }
      COAT_CUDA_CHECK_LAST_LAUNCH();
    });
  });
}

}  // namespace coat::cuda
