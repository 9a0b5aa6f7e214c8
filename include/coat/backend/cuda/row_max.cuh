// Internal to the CUDA kernels (.cu only): the row maxima that a row kernel (one block per row) writes beside
// its output, max |v| of each output row as stored, so that a per-tensor FP8 scale needs no amax pass of its
// own (ops::quantize_per_tensor_from_row_maxima). Threads fold what they store into an amax key of
// quantize_math.h (exact, order-free, NaN above inf above every finite value); one block reduction per row.
// Used by the norm, SwiGLU and RoPE kernels.
#pragma once

#include <cstdint>

#include "coat/backend/cuda/device_vector.cuh"
#include "coat/backend/quantize_math.h"

namespace coat::cuda::row_maxima {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;

/// Folds |v| of every element of the stored vector o into this thread's key.
template <typename S, int kVec>
__device__ __forceinline__ void fold(uint32_t& key, const Pack<S, kVec>& o) {
#pragma unroll
  for (int k = 0; k < kVec; ++k)
    key = fp8math::max_key(key, fp8math::amax_key(static_cast<float>(Elem<S>::load(o.v[k]))));
}

/// Thread 0 writes the max over the block's keys (every thread passes its own) as a magnitude into *out.
/// warp_keys: the kernel's __shared__ slot per warp; reusable by the next row once this returns. Every thread
/// of the block must call it (it holds barriers).
__device__ __forceinline__ void store(uint32_t key, uint32_t* warp_keys, float* out) {
  const int tid = threadIdx.x, lane = tid % kWarp, warp = tid / kWarp;
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    key = fp8math::max_key(key, __shfl_xor_sync(kFullMask, key, offset));
  __syncthreads();  // thread 0 has read the previous row's keys
  if (lane == 0) warp_keys[warp] = key;
  __syncthreads();
  if (tid == 0) {
    uint32_t total = warp_keys[0];
    for (int i = 1; i < static_cast<int>(blockDim.x) / kWarp; ++i) total = fp8math::max_key(total, warp_keys[i]);
    *out = fp8math::amax_from_key(total);
  }
}

}  // namespace coat::cuda::row_maxima
