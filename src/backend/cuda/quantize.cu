// CUDA kernels of FP8 quantization, then their launchers. Every value goes through the scalar math of
// quantize_math.h, shared with the CPU reference, so codes and scales are byte-identical to it.
// All kernels are memory-bound: 16-byte loads where alignment and shapes allow, grid-stride loops, amax
// reductions on integer keys (exact, order-free), no host synchronisation.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/launch.h"
#include "coat/backend/cuda/quantize.h"
#include "coat/backend/quantize_math.h"
#include "group_team.cuh"

namespace coat::cuda {
namespace {

using namespace coat::fp8math;

constexpr int kThreads = 256;
constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;
/// Tile of the fused quantize + transpose: 64x64 codes staged in shared memory; 256 threads, each
/// handling 4 consecutive elements of a tile row (load) or of a transposed row (store).
constexpr int kTile = 64;
constexpr int kTileChunk = 4;
constexpr int kTileThreadsPerRow = kTile / kTileChunk;           // 16
constexpr int kTileRowsPerPass = kThreads / kTileThreadsPerRow;  // 16
/// Shared-memory row padding in bytes: rows start on different banks, and rows stay 4-byte aligned.
constexpr int kTilePad = 4;

/// N elements moved as one load or store (16, 8 or 4 bytes).
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

/// Elements per 16-byte load of a high-precision tensor.
template <DType T>
constexpr int kVec16 = static_cast<int>(16 / sizeof(storage_t<T>));

bool aligned_to(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

__device__ inline int64_t global_thread() {
  return blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
}
__device__ inline int64_t grid_threads() {
  return int64_t(gridDim.x) * blockDim.x;
}

/// Threads of the one block that reduces a tensor of maxima to a scale.
constexpr int kMaximaThreads = 1024;
/// Up to this many maxima the one block reads them itself; more take a first launch over the device.
constexpr int64_t kOneBlockMaxima = 32768;

/// Max of the keys of a block of kBlockThreads threads; valid in thread 0.
template <int kBlockThreads = kThreads>
__device__ uint32_t block_max_key(uint32_t key) {
  static_assert(kBlockThreads % kWarpSize == 0 && kBlockThreads <= kWarpSize * kWarpSize, "one warp of warps");
  __shared__ uint32_t warp_keys[kBlockThreads / kWarpSize];
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    key = max_key(key, __shfl_xor_sync(kFullMask, key, offset));
  }
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  if (lane == 0) warp_keys[warp] = key;
  __syncthreads();
  if (warp == 0) {
    key = lane < kBlockThreads / kWarpSize ? warp_keys[lane] : 0u;
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
      key = max_key(key, __shfl_xor_sync(kFullMask, key, offset));
    }
  }
  return key;
}

// ---- kernels ----

constexpr int kAmaxUnroll = 4;

/// Each block reduces its share to one key and merges it with atomicMax into *out_key (zeroed before).
template <DType In, int Vec>
__global__ __launch_bounds__(kThreads) void tensor_amax_kernel(const storage_t<In>* x, int64_t n,
                                                               uint32_t* out_key) {
  using InPack = Pack<storage_t<In>, Vec>;
  uint32_t key = 0;
  const int64_t packs = n / Vec;
  const InPack* xp = reinterpret_cast<const InPack*>(x);
  // kAmaxUnroll loads in flight per thread before any is reduced, so that a tensor of a few MB, which gives each
  // thread only a few loads, still has enough of them in flight.
  const int64_t stride = grid_threads();
  int64_t i = global_thread();
  for (; i + (kAmaxUnroll - 1) * stride < packs; i += kAmaxUnroll * stride) {
    InPack p[kAmaxUnroll];
#pragma unroll
    for (int u = 0; u < kAmaxUnroll; ++u) p[u] = xp[i + u * stride];
#pragma unroll
    for (int u = 0; u < kAmaxUnroll; ++u) {
#pragma unroll
      for (int v = 0; v < Vec; ++v) key = max_key(key, amax_key(load_float<In>(p[u].v[v])));
    }
  }
  for (; i < packs; i += stride) {
    const InPack p = xp[i];
#pragma unroll
    for (int v = 0; v < Vec; ++v) key = max_key(key, amax_key(load_float<In>(p.v[v])));
  }
  for (int64_t i = packs * Vec + global_thread(); i < n; i += grid_threads()) {
    key = max_key(key, amax_key(load_float<In>(x[i])));
  }
  key = block_max_key(key);
  if (threadIdx.x == 0 && key != 0u) atomicMax(out_key, key);
}

/// A team of `team` lanes per group of group_size contiguous elements, handled as Vec-element vectors
/// (group_team.cuh). Writes the group's amax (kQuantize false) or its codes and scale_inv (true).
template <DType In, int Vec, bool kQuantize, DType Fmt>
__global__ __launch_bounds__(kThreads) void group_kernel(const storage_t<In>* x, int64_t num_groups,
                                                         int64_t group_size, int team, Fp8Saturation sat,
                                                         uint8_t* codes, float* group_out) {
  using InPack = Pack<storage_t<In>, Vec>;
  const auto read = [x](int64_t offset, int64_t j) { return reinterpret_cast<const InPack*>(x + offset)[j]; };
  group_team::quantize_groups<In, Vec, kQuantize, Fmt, InPack, Pack<uint8_t, Vec>>(num_groups, group_size, team, sat,
                                                                                codes, group_out, read, read);
}

/// One block: amax = max |maxima[i]| (keys, as tensor_amax_kernel), then the scale and its inverse, so that
/// a scale from a producer's row maxima takes one launch and no zeroed key.
__global__ __launch_bounds__(kMaximaThreads) void compute_scale_from_maxima_kernel(const float* maxima, int64_t n,
                                                                                  float fmt_max, float* scale,
                                                                                  float* scale_inv) {
  uint32_t key = 0;
#pragma unroll 4
  for (int64_t i = threadIdx.x; i < n; i += kMaximaThreads) key = max_key(key, amax_key(maxima[i]));
  key = block_max_key<kMaximaThreads>(key);
  if (threadIdx.x == 0) {
    const float s = scale_from_amax(amax_from_key(key), fmt_max);
    *scale = s;
    *scale_inv = scale_inv_from_scale(s);
  }
}

/// First stage for many maxima (a weight's step maxima: up to ~10^6): each block's max |maxima| over its
/// grid-stride share into partial[blockIdx.x], as an amax (the key's float: NaN canonical, so exact).
__global__ __launch_bounds__(kThreads) void maxima_partial_kernel(const float* maxima, int64_t n, float* partial) {
  uint32_t key = 0;
#pragma unroll 4
  for (int64_t i = global_thread(); i < n; i += grid_threads()) key = max_key(key, amax_key(maxima[i]));
  key = block_max_key(key);
  if (threadIdx.x == 0) partial[blockIdx.x] = amax_from_key(key);
}

__global__ void compute_scale_kernel(const float* amax, float fmt_max, float* scale, float* scale_inv) {
  const float s = scale_from_amax(*amax, fmt_max);
  *scale = s;
  *scale_inv = scale_inv_from_scale(s);
}

template <DType In, DType Fmt, int Vec>
__global__ __launch_bounds__(kThreads) void quantize_per_tensor_kernel(const storage_t<In>* x, int64_t n,
                                                                       const float* scale_ptr,
                                                                       Fp8Saturation sat, uint8_t* codes) {
  using InPack = Pack<storage_t<In>, Vec>;
  using CodePack = Pack<uint8_t, Vec>;
  const float scale = *scale_ptr;
  const int64_t packs = n / Vec;
  for (int64_t i = global_thread(); i < packs; i += grid_threads()) {
    const InPack p = reinterpret_cast<const InPack*>(x)[i];
    CodePack out;
#pragma unroll
    for (int v = 0; v < Vec; ++v) out.v[v] = quantize_value<Fmt>(load_float<In>(p.v[v]), scale, sat);
    reinterpret_cast<CodePack*>(codes)[i] = out;
  }
  for (int64_t i = packs * Vec + global_thread(); i < n; i += grid_threads()) {
    codes[i] = quantize_value<Fmt>(load_float<In>(x[i]), scale, sat);
  }
}

/// out = decode(code) * scale_inv[i / group_size] (kPerGroup) or * scale_inv[0]. With Vec > 1 a vector
/// never straddles two groups (group_size % Vec == 0 is required for it).
template <DType Fmt, DType Out, int Vec, bool kPerGroup>
__global__ __launch_bounds__(kThreads) void dequantize_kernel(const uint8_t* codes, int64_t n,
                                                              const float* scale_inv, int64_t group_size,
                                                              storage_t<Out>* out) {
  using CodePack = Pack<uint8_t, Vec>;
  using OutPack = Pack<storage_t<Out>, Vec>;
  const float tensor_scale_inv = kPerGroup ? 0.0f : *scale_inv;
  const int64_t packs = n / Vec;
  for (int64_t i = global_thread(); i < packs; i += grid_threads()) {
    const float si = kPerGroup ? scale_inv[(i * Vec) / group_size] : tensor_scale_inv;
    const CodePack c = reinterpret_cast<const CodePack*>(codes)[i];
    OutPack o;
#pragma unroll
    for (int v = 0; v < Vec; ++v) o.v[v] = store_float<Out>(dequantize_value<Fmt>(c.v[v], si));
    reinterpret_cast<OutPack*>(out)[i] = o;
  }
  for (int64_t i = packs * Vec + global_thread(); i < n; i += grid_threads()) {
    const float si = kPerGroup ? scale_inv[i / group_size] : tensor_scale_inv;
    out[i] = store_float<Out>(dequantize_value<Fmt>(codes[i], si));
  }
}

/// x [rows, cols] -> codes [rows, cols] and codes_t [cols, rows] through a 64x64 shared-memory tile: both
/// the reads of x and the writes of codes_t run along contiguous rows. kVecLoad: cols % 4 == 0 (a chunk of
/// 4 along a row is all in range or all out), kVecStore: rows % 4 == 0 (same for transposed rows).
template <DType In, DType Fmt, bool kVecLoad, bool kVecStore>
__global__ __launch_bounds__(kThreads) void quantize_transpose_kernel(const storage_t<In>* x, int64_t rows,
                                                                      int64_t cols, const float* scale_ptr,
                                                                      Fp8Saturation sat, uint8_t* codes,
                                                                      uint8_t* codes_t) {
  using InChunk = Pack<storage_t<In>, kTileChunk>;
  using CodeChunk = Pack<uint8_t, kTileChunk>;
  __shared__ __align__(16) uint8_t tile[kTile][kTile + kTilePad];
  const float scale = *scale_ptr;
  const int64_t tiles_c = (cols + kTile - 1) / kTile;
  const int64_t tiles = ((rows + kTile - 1) / kTile) * tiles_c;
  const int tx = threadIdx.x % kTileThreadsPerRow, ty = threadIdx.x / kTileThreadsPerRow;
  const int chunk = tx * kTileChunk;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t r0 = (t / tiles_c) * kTile, c0 = (t % tiles_c) * kTile;
    // Read a tile of x along its rows; write codes and stage them. Vectorised, every load of the thread's
    // rows is issued before the first is used (one load in flight per thread, as before, moved about 2.2 TB/s
    // on an H100 in the 7B block's forward and backward).
    if constexpr (kVecLoad) {
      constexpr int kPasses = kTile / kTileRowsPerPass;
      const int64_t c = c0 + chunk;
      InChunk p[kPasses];
#pragma unroll
      for (int k = 0; k < kPasses; ++k) {
        const int64_t r = r0 + ty + k * kTileRowsPerPass;
        if (r < rows && c < cols) p[k] = *reinterpret_cast<const InChunk*>(x + r * cols + c);
      }
#pragma unroll
      for (int k = 0; k < kPasses; ++k) {
        const int tr = ty + k * kTileRowsPerPass;
        const int64_t r = r0 + tr;
        if (r < rows && c < cols) {
          CodeChunk q;
#pragma unroll
          for (int v = 0; v < kTileChunk; ++v) q.v[v] = quantize_value<Fmt>(load_float<In>(p[k].v[v]), scale, sat);
          *reinterpret_cast<CodeChunk*>(codes + r * cols + c) = q;
          *reinterpret_cast<CodeChunk*>(&tile[tr][chunk]) = q;
        }
      }
    } else {
      for (int tr = ty; tr < kTile; tr += kTileRowsPerPass) {
        const int64_t r = r0 + tr, c = c0 + chunk;
        if (r >= rows) break;
#pragma unroll
        for (int v = 0; v < kTileChunk; ++v) {
          if (c + v < cols) {
            const uint8_t q = quantize_value<Fmt>(load_float<In>(x[r * cols + c + v]), scale, sat);
            codes[r * cols + c + v] = q;
            tile[tr][chunk + v] = q;
          }
        }
      }
    }
    __syncthreads();
    // Write the tile's columns as rows of codes_t.
    for (int tc = ty; tc < kTile; tc += kTileRowsPerPass) {
      const int64_t c = c0 + tc, r = r0 + chunk;
      if (c >= cols) break;
      if constexpr (kVecStore) {
        if (r < rows) {
          CodeChunk q;
#pragma unroll
          for (int v = 0; v < kTileChunk; ++v) q.v[v] = tile[chunk + v][tc];
          *reinterpret_cast<CodeChunk*>(codes_t + c * rows + r) = q;
        }
      } else {
#pragma unroll
        for (int v = 0; v < kTileChunk; ++v) {
          if (r + v < rows) codes_t[c * rows + r + v] = tile[chunk + v][tc];
        }
      }
    }
    __syncthreads();  // the tile is overwritten by the next iteration
  }
}

/// The fast path of quantize_transpose_kernel when rows % 16 == 0, cols % (16 / sizeof(In)) == 0 and the
/// pointers are aligned (x and codes_t to 16 bytes, codes to one chunk): a kWide x kWide tile, 16-byte loads of
/// x, one chunk of codes per load, and 16-byte stores of codes_t (16 consecutive rows of one column per store),
/// so that every row of codes and of codes_t gets runs of kWide bytes (whole 128-byte lines). The mapping of the
/// stores keeps the shared-memory reads free of bank conflicts: a warp reads 16 consecutive columns (4 words)
/// of two 16-row groups, whose words lie 16 banks apart (the row pitch is an odd number of words).
constexpr int kWide = 128;
constexpr int kWidePad = 4;
static_assert(((kWide + kWidePad) / 4) % 2 == 1, "an odd row pitch in words");

template <DType In, DType Fmt>
__global__ __launch_bounds__(kThreads) void quantize_transpose16_kernel(const storage_t<In>* x, int64_t rows,
                                                                        int64_t cols, const float* scale_ptr,
                                                                        Fp8Saturation sat, uint8_t* codes,
                                                                        uint8_t* codes_t) {
  using S = storage_t<In>;
  constexpr int kChunk = static_cast<int>(16 / sizeof(S));  // elements per load: 8 (bf16) or 4 (f32)
  constexpr int kPerRow = kWide / kChunk;
  constexpr int kRowsPerPass = kThreads / kPerRow;
  constexpr int kPasses = kWide / kRowsPerPass;
  constexpr int kRun = 16;                                      // codes per store of codes_t
  constexpr int kColBlocks = kWide / 16;                        // 16-column blocks of a tile
  constexpr int kStores = kWide * (kWide / kRun) / kThreads;    // 16-byte stores of codes_t per thread
  static_assert(kChunk % 4 == 0 && kPasses * kRowsPerPass == kWide, "whole 4-byte words, whole tile rows");
  static_assert(kStores * kThreads == kWide * (kWide / kRun) && (kWide / kRun) % 2 == 0, "whole warps of runs");
  __shared__ __align__(16) uint8_t tile[kWide][kWide + kWidePad];
  const float scale = *scale_ptr;
  const int64_t tiles_c = (cols + kWide - 1) / kWide;
  const int64_t tiles = ((rows + kWide - 1) / kWide) * tiles_c;
  const int lc = (threadIdx.x % kPerRow) * kChunk, lr = threadIdx.x / kPerRow;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t r0 = (t / tiles_c) * kWide, c0 = (t % tiles_c) * kWide;
    const int64_t c = c0 + lc;
    Pack<S, kChunk> p[kPasses];
#pragma unroll
    for (int k = 0; k < kPasses; ++k) {
      const int64_t r = r0 + lr + k * kRowsPerPass;
      if (r < rows && c < cols) p[k] = *reinterpret_cast<const Pack<S, kChunk>*>(x + r * cols + c);
    }
#pragma unroll
    for (int k = 0; k < kPasses; ++k) {
      const int tr = lr + k * kRowsPerPass;
      const int64_t r = r0 + tr;
      if (r < rows && c < cols) {
        Pack<uint8_t, kChunk> q;
#pragma unroll
        for (int v = 0; v < kChunk; ++v) q.v[v] = quantize_value<Fmt>(load_float<In>(p[k].v[v]), scale, sat);
        *reinterpret_cast<Pack<uint8_t, kChunk>*>(codes + r * cols + c) = q;
        // The tile's rows are 4-byte aligned only: stage the chunk as 4-byte words.
#pragma unroll
        for (int w = 0; w < kChunk / 4; ++w) {
          *reinterpret_cast<uint32_t*>(&tile[tr][lc + 4 * w]) = *reinterpret_cast<const uint32_t*>(&q.v[4 * w]);
        }
      }
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kStores; ++i) {
      const int wq = i * (kThreads / 32) + warp;  // this warp's item: 16 columns x 2 row groups
      const int tcol = (wq % kColBlocks) * 16 + lane % 16, trow = ((wq / kColBlocks) * 2 + lane / 16) * kRun;
      const int64_t tc = c0 + tcol, tr = r0 + trow;
      if (tc < cols && tr < rows) {
        Pack<uint8_t, kRun> q;
#pragma unroll
        for (int v = 0; v < kRun; ++v) q.v[v] = tile[trow + v][tcol];
        *reinterpret_cast<Pack<uint8_t, kRun>*>(codes_t + tc * rows + tr) = q;
      }
    }
    __syncthreads();  // the tile is overwritten by the next iteration
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


template <bool kQuantize>
void launch_group_kernel(const char* op, const Tensor& x, int64_t group_size, Fp8Saturation sat, DType fmt,
                         uint8_t* codes, float* group_out) {
  const int64_t groups = x.numel() / group_size;
  if (groups == 0) return;
  cudaStream_t stream = stream_of(x);
  dispatch_float_dtype(x.dtype(), op, [&](auto in) {
    constexpr DType In = decltype(in)::value;
    constexpr int kVec = kVec16<In>;
    const bool vectorized =
        group_size % kVec == 0 && aligned_to(x.data_ptr(), 16) && (!kQuantize || aligned_to(codes, kVec));
    const int vec = vectorized ? kVec : 1;
    const int team = group_team::team_size(group_size / vec);
    const int64_t threads = group_team::threads_for(groups, team);
    const unsigned blocks = grid_for(x, threads, kThreads);
    auto launch = [&](auto f) {
      constexpr DType Fmt = decltype(f)::value;
      if (vectorized) {
        group_kernel<In, kVec, kQuantize, Fmt><<<blocks, kThreads, 0, stream>>>(
            input_data<In>(x), groups, group_size, team, sat, codes, group_out);
      } else {
        group_kernel<In, 1, kQuantize, Fmt><<<blocks, kThreads, 0, stream>>>(
            input_data<In>(x), groups, group_size, team, sat, codes, group_out);
      }
      COAT_CUDA_CHECK_LAST_LAUNCH();
    };
    if constexpr (kQuantize) {
      dispatch_fp8_format(fmt, op, launch);
    } else {
      launch(DTypeTag<DType::E4M3>{});  // the format plays no part in an amax
    }
  });
}

template <bool kPerGroup>
void launch_dequantize(const char* op, const Tensor& codes, const Tensor& scale_inv, int64_t group_size,
                       Tensor& out) {
  const int64_t n = codes.numel();
  if (n == 0) return;
  cudaStream_t stream = stream_of(codes);
  dispatch_fp8_format(codes.dtype(), op, [&](auto f) {
    constexpr DType Fmt = decltype(f)::value;
    dispatch_float_dtype(out.dtype(), op, [&](auto o) {
      constexpr DType Out = decltype(o)::value;
      constexpr int kVec = kVec16<Out>;
      const bool vectorized = (!kPerGroup || group_size % kVec == 0) && aligned_to(out.data_ptr(), 16) &&
                              aligned_to(codes.data_ptr(), kVec);
      const unsigned blocks = grid_for(codes, vectorized ? n / kVec : n, kThreads);
      const float* si = scale_inv.data<const float>();
      auto* op_data = out.data<storage_t<Out>>();
      if (vectorized) {
        dequantize_kernel<Fmt, Out, kVec, kPerGroup>
            <<<blocks, kThreads, 0, stream>>>(code_data(codes), n, si, group_size, op_data);
      } else {
        dequantize_kernel<Fmt, Out, 1, kPerGroup>
            <<<blocks, kThreads, 0, stream>>>(code_data(codes), n, si, group_size, op_data);
      }
      COAT_CUDA_CHECK_LAST_LAUNCH();
    });
  });
}

}  // namespace

void group_amax(const Tensor& x, int64_t group_size, Tensor& out_amax) {
  check_group_amax(x, group_size, out_amax, x.device());
  COAT_ARG_CHECK(x.device().is_cuda(), "group_amax", "input ", x.str(), " is not on a CUDA device");
  launch_group_kernel<false>("group_amax", x, group_size, Fp8Saturation::Saturate, DType::E4M3, nullptr,
                             out_amax.data<float>());
}

void tensor_amax(const Tensor& x, Tensor& out_amax) {
  check_tensor_amax(x, out_amax, x.device());
  COAT_ARG_CHECK(x.device().is_cuda(), "tensor_amax", "input ", x.str(), " is not on a CUDA device");
  cudaStream_t stream = stream_of(x);
  uint32_t* key = static_cast<uint32_t*>(out_amax.data_ptr());
  COAT_CUDA_CHECK(cudaMemsetAsync(key, 0, sizeof(uint32_t), stream));  // key 0 is +0.0f
  const int64_t n = x.numel();
  if (n == 0) return;
  dispatch_float_dtype(x.dtype(), "tensor_amax", [&](auto in) {
    constexpr DType In = decltype(in)::value;
    constexpr int kVec = kVec16<In>;
    if (aligned_to(x.data_ptr(), 16)) {
      tensor_amax_kernel<In, kVec><<<grid_for(x, n / kVec / kAmaxUnroll, kThreads), kThreads, 0, stream>>>(
          input_data<In>(x), n, key);
    } else {
      tensor_amax_kernel<In, 1><<<grid_for(x, n, kThreads), kThreads, 0, stream>>>(input_data<In>(x), n, key);
    }
    COAT_CUDA_CHECK_LAST_LAUNCH();
  });
}

void compute_scale(const Tensor& amax, DType fmt, Tensor& scale, Tensor& scale_inv) {
  check_compute_scale(amax, fmt, scale, scale_inv, amax.device());
  COAT_ARG_CHECK(amax.device().is_cuda(), "compute_scale", "amax ", amax.str(), " is not on a CUDA device");
  compute_scale_kernel<<<1, 1, 0, stream_of(amax)>>>(amax.data<const float>(), fp8_max(fmt),
                                                     scale.data<float>(), scale_inv.data<float>());
  COAT_CUDA_CHECK_LAST_LAUNCH();
}

void compute_scale_from_maxima(const Tensor& maxima, DType fmt, Tensor& scale, Tensor& scale_inv) {
  check_compute_scale_from_maxima(maxima, fmt, scale, scale_inv, maxima.device());
  COAT_ARG_CHECK(maxima.device().is_cuda(), "compute_scale_from_maxima", "maxima ", maxima.str(),
                 " are not on a CUDA device");
  cudaStream_t stream = stream_of(maxima);
  const float* values = maxima.data<const float>();
  int64_t n = maxima.numel();
  // Beyond what one block reads quickly (a token row's maxima are ~10^4; a weight's step maxima up to ~10^6,
  // which one block read at a few percent of the bandwidth), a first launch over the device leaves one amax
  // per block for the one-block launch.
  Tensor partial;
  if (n > kOneBlockMaxima) {
    const auto blocks = static_cast<unsigned>(std::min<int64_t>(grid_for(maxima, n, kThreads), kMaximaThreads));
    partial = Tensor::empty(maxima.context(), {static_cast<int64_t>(blocks)}, DType::F32, MemoryCategory::Workspace);
    maxima_partial_kernel<<<blocks, kThreads, 0, stream>>>(values, n, partial.data<float>());
    COAT_CUDA_CHECK_LAST_LAUNCH();
    values = partial.data<const float>();
    n = blocks;
  }
  compute_scale_from_maxima_kernel<<<1, kMaximaThreads, 0, stream>>>(values, n, fp8_max(fmt), scale.data<float>(),
                                                                    scale_inv.data<float>());
  COAT_CUDA_CHECK_LAST_LAUNCH();
}

void quantize_per_tensor(const Tensor& x, const Tensor& scale, Fp8Saturation sat, Tensor& codes) {
  check_quantize_per_tensor(x, scale, codes, x.device());
  COAT_ARG_CHECK(x.device().is_cuda(), "quantize_per_tensor", "input ", x.str(), " is not on a CUDA device");
  const int64_t n = x.numel();
  if (n == 0) return;
  cudaStream_t stream = stream_of(x);
  dispatch_float_dtype(x.dtype(), "quantize_per_tensor", [&](auto in) {
    constexpr DType In = decltype(in)::value;
    constexpr int kVec = kVec16<In>;
    const bool vectorized = aligned_to(x.data_ptr(), 16) && aligned_to(codes.data_ptr(), kVec);
    const unsigned blocks = grid_for(x, vectorized ? n / kVec : n, kThreads);
    dispatch_fp8_format(codes.dtype(), "quantize_per_tensor", [&](auto f) {
      constexpr DType Fmt = decltype(f)::value;
      if (vectorized) {
        quantize_per_tensor_kernel<In, Fmt, kVec><<<blocks, kThreads, 0, stream>>>(
            input_data<In>(x), n, scale.data<const float>(), sat, code_data(codes));
      } else {
        quantize_per_tensor_kernel<In, Fmt, 1><<<blocks, kThreads, 0, stream>>>(
            input_data<In>(x), n, scale.data<const float>(), sat, code_data(codes));
      }
      COAT_CUDA_CHECK_LAST_LAUNCH();
    });
  });
}

void dequantize_per_tensor(const Tensor& codes, const Tensor& scale_inv, Tensor& out) {
  check_dequantize_per_tensor(codes, scale_inv, out, codes.device());
  COAT_ARG_CHECK(codes.device().is_cuda(), "dequantize_per_tensor", "codes ", codes.str(),
                 " are not on a CUDA device");
  launch_dequantize<false>("dequantize_per_tensor", codes, scale_inv, 1, out);
}

void quantize_transpose_per_tensor(const Tensor& x, const Tensor& scale, Fp8Saturation sat, Tensor& codes,
                                   Tensor& codes_t) {
  constexpr const char* op = "quantize_transpose_per_tensor";
  check_quantize_transpose(x, scale, codes, codes_t, x.device());
  COAT_ARG_CHECK(x.device().is_cuda(), op, "input ", x.str(), " is not on a CUDA device");
  const int64_t rows = x.size(0), cols = x.size(1);
  if (rows == 0 || cols == 0) return;
  const int64_t tiles = ((rows + kTile - 1) / kTile) * ((cols + kTile - 1) / kTile);
  cudaStream_t stream = stream_of(x);
  dispatch_float_dtype(x.dtype(), op, [&](auto in) {
    constexpr DType In = decltype(in)::value;
    using S = storage_t<In>;
    const bool vec_load = cols % kTileChunk == 0 && aligned_to(x.data_ptr(), kTileChunk * sizeof(S)) &&
                          aligned_to(codes.data_ptr(), kTileChunk);
    const bool vec_store = rows % kTileChunk == 0 && aligned_to(codes_t.data_ptr(), kTileChunk);
    const bool wide = rows % 16 == 0 && cols % kVec16<In> == 0 && aligned_to(x.data_ptr(), 16) &&
                      aligned_to(codes.data_ptr(), kVec16<In>) && aligned_to(codes_t.data_ptr(), 16);
    const unsigned blocks = grid_for(x, tiles * kThreads, kThreads);
    dispatch_fp8_format(codes.dtype(), op, [&](auto f) {
      constexpr DType Fmt = decltype(f)::value;
      const float* sp = scale.data<const float>();
      uint8_t* c = code_data(codes);
      uint8_t* ct = code_data(codes_t);
      if (wide) {
        const int64_t wide_tiles = ((rows + kWide - 1) / kWide) * ((cols + kWide - 1) / kWide);
        quantize_transpose16_kernel<In, Fmt><<<grid_for(x, wide_tiles * kThreads, kThreads), kThreads, 0, stream>>>(
            input_data<In>(x), rows, cols, sp, sat, c, ct);
      } else if (vec_load && vec_store) {
        quantize_transpose_kernel<In, Fmt, true, true>
            <<<blocks, kThreads, 0, stream>>>(input_data<In>(x), rows, cols, sp, sat, c, ct);
      } else if (vec_load) {
        quantize_transpose_kernel<In, Fmt, true, false>
            <<<blocks, kThreads, 0, stream>>>(input_data<In>(x), rows, cols, sp, sat, c, ct);
      } else if (vec_store) {
        quantize_transpose_kernel<In, Fmt, false, true>
            <<<blocks, kThreads, 0, stream>>>(input_data<In>(x), rows, cols, sp, sat, c, ct);
      } else {
        quantize_transpose_kernel<In, Fmt, false, false>
            <<<blocks, kThreads, 0, stream>>>(input_data<In>(x), rows, cols, sp, sat, c, ct);
      }
      COAT_CUDA_CHECK_LAST_LAUNCH();
    });
  });
}

void quantize_per_group(const Tensor& x, int64_t group_size, Fp8Saturation sat, Tensor& codes,
                        Tensor& scale_inv) {
  check_quantize_per_group(x, group_size, codes, scale_inv, x.device());
  COAT_ARG_CHECK(x.device().is_cuda(), "quantize_per_group", "input ", x.str(), " is not on a CUDA device");
  launch_group_kernel<true>("quantize_per_group", x, group_size, sat, codes.dtype(), code_data(codes),
                            scale_inv.data<float>());
}

void dequantize_per_group(const Tensor& codes, const Tensor& scale_inv, int64_t group_size, Tensor& out) {
  check_dequantize_per_group(codes, scale_inv, group_size, out, codes.device());
  COAT_ARG_CHECK(codes.device().is_cuda(), "dequantize_per_group", "codes ", codes.str(),
                 " are not on a CUDA device");
  launch_dequantize<true>("dequantize_per_group", codes, scale_inv, group_size, out);
}

}  // namespace coat::cuda
