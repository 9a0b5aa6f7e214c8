// Internal to the CUDA group quantisers (quantize.cu's per-group amax / quantise, add_quantize.cu's add +
// quantise): a team of lanes (a power of two, at most a warp) per group of group_size contiguous elements,
// read as Vec-element vectors. Each lane keeps up to kGroupCachedVectors vectors in registers between the
// group's amax and its quantisation, and reads the rest a second time. Every value goes through the scalar
// math of quantize_math.h, so codes and scales are byte-identical to the CPU reference.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "coat/backend/quantize_math.h"
#include "coat/core/dtype.h"

namespace coat::cuda::group_team {

inline constexpr int kWarp = 32;
/// Vectors a lane keeps in registers between the amax and the quantisation; longer groups are read a second
/// time (from L1/L2, not DRAM).
inline constexpr int kCachedVectors = 4;

/// Lanes that share one group: the fewest (a power of two, at most a warp) that leave each lane at most
/// kCachedVectors vectors, so that a lane's loads are independent and in flight together.
inline int team_size(int64_t vectors_per_group) {
  int team = 1;
  while (team < kWarp && int64_t(team) * kCachedVectors < vectors_per_group) team *= 2;
  return team;
}

/// Threads that cover `groups` groups with teams of `team` lanes (whole warps).
inline int64_t threads_for(int64_t groups, int team) {
  return (groups + kWarp / team - 1) / (kWarp / team) * kWarp;
}

/// The loop of one lane over its teams' groups (grid-stride). `first(offset, j)` gives vector j of the group
/// starting at element `offset` on its first read (it may also store it, e.g. a sum); `again(offset, j)`
/// gives it once more for the quantisation of the vectors beyond the lane's cache. Writes per group its amax
/// to group_out (kQuantize false), or its codes and scale_inv to codes and group_out (kQuantize true).
/// P: the vector of storage_t<T>; CP: the vector of Vec codes.
template <DType T, int Vec, bool kQuantize, DType Fmt, typename P, typename CP, typename First, typename Again>
__device__ inline void quantize_groups(int64_t num_groups, int64_t group_size, int team, Fp8Saturation sat,
                                       uint8_t* codes, float* group_out, First&& first, Again&& again) {
  const int lane = threadIdx.x % kWarp;
  const int team_lane = lane % team;
  const int teams_per_warp = kWarp / team;
  const int64_t warp = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / kWarp;
  const int64_t warps = int64_t(gridDim.x) * blockDim.x / kWarp;
  const int64_t vecs = group_size / Vec;
  const auto fold = [](uint32_t key, const P& p) {
#pragma unroll
    for (int v = 0; v < Vec; ++v) key = fp8math::max_key(key, fp8math::amax_key(fp8math::load_float<T>(p.v[v])));
    return key;
  };
  const auto encode = [sat](const P& p, float scale) {
    CP out;
#pragma unroll
    for (int v = 0; v < Vec; ++v) out.v[v] = fp8math::quantize_value<Fmt>(fp8math::load_float<T>(p.v[v]), scale, sat);
    return out;
  };
  // The loop bound is uniform across the warp, so that every lane reaches the shuffles below.
  for (int64_t head = warp * teams_per_warp; head < num_groups; head += warps * teams_per_warp) {
    const int64_t g = head + lane / team;
    const bool active = g < num_groups;
    const int64_t offset = (active ? g : 0) * group_size;
    P cache[kCachedVectors];
    uint32_t key = 0;
    if (active) {
#pragma unroll
      for (int c = 0; c < kCachedVectors; ++c) {
        const int64_t j = team_lane + int64_t(c) * team;
        if (j < vecs) {
          cache[c] = first(offset, j);
          key = fold(key, cache[c]);
        }
      }
      for (int64_t j = team_lane + int64_t(kCachedVectors) * team; j < vecs; j += team) key = fold(key, first(offset, j));
    }
    for (int o = team / 2; o > 0; o /= 2) key = fp8math::max_key(key, __shfl_xor_sync(0xffffffffu, key, o));
    if (!active) continue;
    const float amax = fp8math::amax_from_key(key);
    if constexpr (!kQuantize) {
      if (team_lane == 0) group_out[g] = amax;
    } else {
      const float scale = fp8math::scale_from_amax(amax, fp8math::fp8_max(Fmt));
      if (team_lane == 0) group_out[g] = fp8math::scale_inv_from_scale(scale);
      CP* gc = reinterpret_cast<CP*>(codes + offset);
#pragma unroll
      for (int c = 0; c < kCachedVectors; ++c) {
        const int64_t j = team_lane + int64_t(c) * team;
        if (j < vecs) gc[j] = encode(cache[c], scale);
      }
      // A lane's own stores in `first` are visible to its loads in `again` (program order).
      for (int64_t j = team_lane + int64_t(kCachedVectors) * team; j < vecs; j += team) gc[j] = encode(again(offset, j), scale);
    }
  }
}

}  // namespace coat::cuda::group_team
