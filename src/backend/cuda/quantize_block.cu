// CUDA kernels of 128-block FP8 quantization, then their launchers. Every value goes through the scalar math
// of quantize_math.h, shared with the CPU reference, and every scale goes where block_scale_layout.h says, so
// codes and scales are byte-identical to it. Amaxes are maxima of integer keys (exact, order-free).
//  - 1x128: one warp per group, 4 elements a lane (one 16- or 8-byte load when aligned), shuffles for the amax.
//  - 128x128: one 256-thread block per 128x128 tile, two passes over the tile (amax, then quantize; the
//    second pass reads the tile from L1/L2), a block reduction for the amax.
#include <cuda_runtime.h>

#include <cstdint>

#include "coat/backend/block_scale_layout.h"
#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/launch.h"
#include "coat/backend/cuda/quantize_block.h"
#include "coat/backend/quantize_math.h"

namespace coat::cuda {
namespace {

using namespace coat::fp8math;

constexpr int kThreads = 256;
constexpr int kWarpSize = 32;
constexpr int kWarpsPerBlock = kThreads / kWarpSize;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kBlock = static_cast<int>(fp8block::kBlock);
/// Elements of a 1x128 group each lane of its warp handles.
constexpr int kPerLane = kBlock / kWarpSize;  // 4
/// Elements one load / store moves when the pointers are aligned for it.
constexpr int kVec = 4;

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

bool aligned_to(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

__device__ inline int64_t global_thread() {
  return blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
}
__device__ inline int64_t grid_threads() {
  return int64_t(gridDim.x) * blockDim.x;
}

__device__ inline uint32_t warp_max_key(uint32_t key) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) key = max_key(key, __shfl_xor_sync(kFullMask, key, offset));
  return key;
}

/// Loads the N (Vec or 1) elements at p[0..N) into v as floats.
template <DType In, int N>
__device__ inline void load_floats(const storage_t<In>* p, float* v) {
  if constexpr (N == 1) {
    v[0] = load_float<In>(*p);
  } else {
    const Pack<storage_t<In>, N> pack = *reinterpret_cast<const Pack<storage_t<In>, N>*>(p);
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] = load_float<In>(pack.v[i]);
  }
}

/// Stores the codes of the N floats in v at p[0..N).
template <DType Fmt, int N>
__device__ inline void store_codes(const float* v, float scale, Fp8Saturation sat, uint8_t* p) {
  if constexpr (N == 1) {
    *p = quantize_value<Fmt>(v[0], scale, sat);
  } else {
    Pack<uint8_t, N> pack;
#pragma unroll
    for (int i = 0; i < N; ++i) pack.v[i] = quantize_value<Fmt>(v[i], scale, sat);
    *reinterpret_cast<Pack<uint8_t, N>*>(p) = pack;
  }
}

// ---- kernels ----

/// One warp per 1x128 group g = row * kblocks + kb. With Vec == 4 lane l owns elements 4l .. 4l+3 (one load);
/// with Vec == 1 (unaligned pointers) elements l, l+32, l+64, l+96. The warp that handles the last row also
/// writes the layout's padding rows of its group column.
template <DType In, DType Fmt, int Vec>
__global__ __launch_bounds__(kThreads) void quantize_1x128_kernel(const storage_t<In>* x, int64_t rows,
                                                                  int64_t kblocks, int64_t ld, Fp8Saturation sat,
                                                                  uint8_t* codes, float* scale_inv) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t warp = global_thread() / kWarpSize, warps = grid_threads() / kWarpSize;
  const int64_t cols = kblocks * kBlock, groups = rows * kblocks;
  // g is uniform across the warp, so every lane reaches the shuffles.
  for (int64_t g = warp; g < groups; g += warps) {
    const int64_t r = g / kblocks, kb = g % kblocks;
    const int64_t first = r * cols + kb * kBlock;
    float v[kPerLane];
#pragma unroll
    for (int j = 0; j < kPerLane / Vec; ++j) {
      load_floats<In, Vec>(x + first + (Vec == 1 ? j * kWarpSize + lane : lane * Vec), v + j * Vec);
    }
    uint32_t key = 0;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) key = max_key(key, amax_key(v[j]));
    key = warp_max_key(key);
    const float scale = scale_from_amax(amax_from_key(key), fp8_max(Fmt));
#pragma unroll
    for (int j = 0; j < kPerLane / Vec; ++j) {
      store_codes<Fmt, Vec>(v + j * Vec, scale, sat, codes + first + (Vec == 1 ? j * kWarpSize + lane : lane * Vec));
    }
    if (lane == 0) scale_inv[fp8block::scale_index_1x128(r, kb, ld)] = scale_inv_from_scale(scale);
    if (r == rows - 1 && lane < ld - rows) {
      scale_inv[fp8block::scale_index_1x128(rows + lane, kb, ld)] = fp8block::kPadScaleInv;
    }
  }
}

/// One 256-thread block per 128x128 tile t = nb * kblocks + kb. Threads cover a tile row with 128 / Vec
/// threads of Vec consecutive elements each, 256 / (128 / Vec) rows per pass. The block handling the last
/// tile of a tile row also writes that row's padding entries of the layout.
template <DType In, DType Fmt, int Vec>
__global__ __launch_bounds__(kThreads) void quantize_128x128_kernel(const storage_t<In>* w, int64_t nblocks,
                                                                    int64_t kblocks, int64_t ld,
                                                                    Fp8Saturation sat, uint8_t* codes,
                                                                    float* scale_inv) {
  constexpr int kThreadsPerRow = kBlock / Vec;
  constexpr int kRowsPerPass = kThreads / kThreadsPerRow;
  __shared__ uint32_t warp_keys[kWarpsPerBlock];
  __shared__ float tile_scale;
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int col = (threadIdx.x % kThreadsPerRow) * Vec, row0 = threadIdx.x / kThreadsPerRow;
  const int64_t cols = kblocks * kBlock, tiles = nblocks * kblocks;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t nb = t / kblocks, kb = t % kblocks;
    const int64_t corner = nb * kBlock * cols + kb * kBlock;
    uint32_t key = 0;
    for (int r = row0; r < kBlock; r += kRowsPerPass) {
      float v[Vec];
      load_floats<In, Vec>(w + corner + r * cols + col, v);
#pragma unroll
      for (int i = 0; i < Vec; ++i) key = max_key(key, amax_key(v[i]));
    }
    key = warp_max_key(key);
    if (lane == 0) warp_keys[warp] = key;
    __syncthreads();
    if (warp == 0) {
      key = warp_max_key(lane < kWarpsPerBlock ? warp_keys[lane] : 0u);
      if (lane == 0) {
        const float s = scale_from_amax(amax_from_key(key), fp8_max(Fmt));
        tile_scale = s;
        scale_inv[fp8block::scale_index_128x128(nb, kb, ld)] = scale_inv_from_scale(s);
        if (kb == kblocks - 1) {
          for (int64_t pad = kblocks; pad < ld; ++pad)
            scale_inv[fp8block::scale_index_128x128(nb, pad, ld)] = fp8block::kPadScaleInv;
        }
      }
    }
    __syncthreads();
    // Every thread reads tile_scale before it can reach the next tile's first __syncthreads, after which
    // alone thread 0 rewrites it; warp_keys is likewise read (by warp 0) before the second barrier.
    const float scale = tile_scale;
    for (int r = row0; r < kBlock; r += kRowsPerPass) {
      float v[Vec];
      const int64_t i = corner + r * cols + col;
      load_floats<In, Vec>(w + i, v);
      store_codes<Fmt, Vec>(v, scale, sat, codes + i);
    }
  }
}

/// out = decode(code) * scale_inv of the element's block (k2d: 128x128 layout, else 1x128 layout).
template <DType Fmt, DType Out, bool k2d>
__global__ __launch_bounds__(kThreads) void dequantize_block_kernel(const uint8_t* codes, int64_t rows,
                                                                    int64_t cols, const float* scale_inv,
                                                                    int64_t ld, storage_t<Out>* out) {
  const int64_t n = rows * cols;
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    const int64_t r = i / cols, kb = (i % cols) / kBlock;
    const float si = k2d ? scale_inv[fp8block::scale_index_128x128(r / kBlock, kb, ld)]
                         : scale_inv[fp8block::scale_index_1x128(r, kb, ld)];
    out[i] = store_float<Out>(dequantize_value<Fmt>(codes[i], si));
  }
}

// ---- launchers ----

template <DType In>
const storage_t<In>* input_data(const Tensor& x) {
  return static_cast<const storage_t<In>*>(x.data_ptr());
}

uint8_t* code_data(const Tensor& codes) {
  return static_cast<uint8_t*>(codes.data_ptr());
}

/// Whether x and codes are aligned for Vec-element loads and stores (rows and blocks start at multiples of
/// 128 elements, so the base addresses decide).
bool vectorizable(const Tensor& x, const Tensor& codes) {
  return aligned_to(x.data_ptr(), kVec * dtype_size(x.dtype())) && aligned_to(codes.data_ptr(), kVec);
}

template <bool k2d>
void launch_dequantize(const char* op, const Tensor& codes, const Tensor& scale_inv, int64_t ld, Tensor& out) {
  const int64_t n = codes.numel();
  if (n == 0) return;
  const unsigned blocks = grid_for(codes, n, kThreads);
  cudaStream_t stream = stream_of(codes);
  dispatch_fp8_format(codes.dtype(), op, [&](auto f) {
    constexpr DType Fmt = decltype(f)::value;
    dispatch_float_dtype(out.dtype(), op, [&](auto o) {
      constexpr DType Out = decltype(o)::value;
      dequantize_block_kernel<Fmt, Out, k2d><<<blocks, kThreads, 0, stream>>>(
          code_data(codes), codes.size(0), codes.size(1), scale_inv.data<const float>(), ld,
          out.data<storage_t<Out>>());
      COAT_CUDA_CHECK_LAST_LAUNCH();
    });
  });
}

}  // namespace

void quantize_1x128(const Tensor& x, Fp8Saturation sat, Tensor& codes, Tensor& scale_inv) {
  constexpr const char* op = "quantize_1x128";
  fp8block::check_quantize_1x128(x, codes, scale_inv, x.device());
  COAT_ARG_CHECK(x.device().is_cuda(), op, "input ", x.str(), " is not on a CUDA device");
  const int64_t rows = x.size(0), kblocks = x.size(1) / fp8block::kBlock;
  const int64_t groups = rows * kblocks;
  if (groups == 0) return;  // no group, no padding either (the padding rows belong to some group column)
  const int64_t ld = fp8block::scale_ld_1x128(rows);
  const unsigned blocks = grid_for(x, groups * kWarpSize, kThreads);
  const bool vectorized = vectorizable(x, codes);
  cudaStream_t stream = stream_of(x);
  dispatch_float_dtype(x.dtype(), op, [&](auto in) {
    constexpr DType In = decltype(in)::value;
    dispatch_fp8_format(codes.dtype(), op, [&](auto f) {
      constexpr DType Fmt = decltype(f)::value;
      if (vectorized) {
        quantize_1x128_kernel<In, Fmt, kVec><<<blocks, kThreads, 0, stream>>>(
            input_data<In>(x), rows, kblocks, ld, sat, code_data(codes), scale_inv.data<float>());
      } else {
        quantize_1x128_kernel<In, Fmt, 1><<<blocks, kThreads, 0, stream>>>(
            input_data<In>(x), rows, kblocks, ld, sat, code_data(codes), scale_inv.data<float>());
      }
      COAT_CUDA_CHECK_LAST_LAUNCH();
    });
  });
}

void quantize_128x128(const Tensor& w, Fp8Saturation sat, Tensor& codes, Tensor& scale_inv) {
  constexpr const char* op = "quantize_128x128";
  fp8block::check_quantize_128x128(w, codes, scale_inv, w.device());
  COAT_ARG_CHECK(w.device().is_cuda(), op, "input ", w.str(), " is not on a CUDA device");
  const int64_t nblocks = w.size(0) / fp8block::kBlock, kblocks = w.size(1) / fp8block::kBlock;
  const int64_t tiles = nblocks * kblocks;
  if (tiles == 0) return;  // K == 0 leaves ld == 0 (no padding); N == 0 leaves no scale rows
  const int64_t ld = fp8block::scale_ld_128x128(w.size(1));
  const unsigned blocks = grid_for(w, tiles * kThreads, kThreads);
  const bool vectorized = vectorizable(w, codes);
  cudaStream_t stream = stream_of(w);
  dispatch_float_dtype(w.dtype(), op, [&](auto in) {
    constexpr DType In = decltype(in)::value;
    dispatch_fp8_format(codes.dtype(), op, [&](auto f) {
      constexpr DType Fmt = decltype(f)::value;
      if (vectorized) {
        quantize_128x128_kernel<In, Fmt, kVec><<<blocks, kThreads, 0, stream>>>(
            input_data<In>(w), nblocks, kblocks, ld, sat, code_data(codes), scale_inv.data<float>());
      } else {
        quantize_128x128_kernel<In, Fmt, 1><<<blocks, kThreads, 0, stream>>>(
            input_data<In>(w), nblocks, kblocks, ld, sat, code_data(codes), scale_inv.data<float>());
      }
      COAT_CUDA_CHECK_LAST_LAUNCH();
    });
  });
}

void dequantize_1x128(const Tensor& codes, const Tensor& scale_inv, Tensor& out) {
  fp8block::check_dequantize_1x128(codes, scale_inv, out, codes.device());
  COAT_ARG_CHECK(codes.device().is_cuda(), "dequantize_1x128", "codes ", codes.str(), " are not on a CUDA device");
  launch_dequantize<false>("dequantize_1x128", codes, scale_inv, fp8block::scale_ld_1x128(codes.size(0)), out);
}

void dequantize_128x128(const Tensor& codes, const Tensor& scale_inv, Tensor& out) {
  fp8block::check_dequantize_128x128(codes, scale_inv, out, codes.device());
  COAT_ARG_CHECK(codes.device().is_cuda(), "dequantize_128x128", "codes ", codes.str(),
                 " are not on a CUDA device");
  launch_dequantize<true>("dequantize_128x128", codes, scale_inv, fp8block::scale_ld_128x128(codes.size(1)),
                          out);
}

}  // namespace coat::cuda
