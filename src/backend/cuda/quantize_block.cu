// CUDA kernels of 128-block FP8 quantization, then their launchers. Every value goes through the scalar math
// of quantize_math.h, shared with the CPU reference, and every scale goes where block_scale_layout.h says, so
// codes and scales are byte-identical to it. Amaxes are maxima of integer keys (exact, order-free).
//  - 1x128: one warp per group, 4 elements a lane (one 16- or 8-byte load when aligned), shuffles for the amax.
//  - 128x128: one 256-thread block per 128x128 tile, two passes over the tile (amax, then quantize; the
//    second pass reads the tile from L1/L2), a block reduction for the amax; with the tiles' amaxes given
//    (quantize_128x128_with_maxima) only the second.
//  - 1x128 of x^T (quantize_1x128_transposed): one 256-thread block per tile of 128 rows x 64 columns of x,
//    loaded with coalesced row-wise reads (4-element vectors when aligned) into shared memory as floats;
//    then each warp takes whole columns: 4 conflict-free shared reads a lane, a shuffle amax, the codes of
//    the column staged as 128 bytes in shared memory and written as one coalesced 128-byte row of x^T.
//  - both at once (quantize_1x128_pair: an FP8 GEMM operand for its fprop/dgrad and for its wgrad): one
//    256-thread block per 128x128 tile held in dynamic shared memory as floats, loaded once; warps take its
//    rows (the 1x128 groups of x, lane l holding elements l + 32j) and then its columns (as the transposed
//    kernel): x is read once instead of twice. A 16-bit x with aligned pointers takes quantize_1x128_pair16:
//    16-byte loads, an unpadded tile with XOR-swizzled 16-byte vectors, 8 lanes a row or column pair, so that
//    four groups a warp are reduced at once and codes leave in 8- and 16-byte stores.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

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

/// The scale of a 1x128 group held by a warp, kPerLane values a lane: the warp's amax, then the format's scale.
template <DType Fmt>
__device__ inline float warp_group_scale(const float (&v)[kPerLane]) {
  uint32_t key = 0;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) key = max_key(key, amax_key(v[j]));
  return scale_from_amax(amax_from_key(warp_max_key(key)), fp8_max(Fmt));
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
    const float scale = warp_group_scale<Fmt>(v);
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
/// tile of a tile row also writes that row's padding entries of the layout. With block_maxima (the tiles'
/// amaxes, [nblocks][kblocks]) the amax pass is skipped and the tile's amax read from there.
template <DType In, DType Fmt, int Vec>
__global__ __launch_bounds__(kThreads) void quantize_128x128_kernel(const storage_t<In>* w,
                                                                    const float* block_maxima,
                                                                    int64_t nblocks, int64_t kblocks,
                                                                    int64_t ld, Fp8Saturation sat,
                                                                    uint8_t* codes, float* scale_inv) {
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
    for (int r = row0; block_maxima == nullptr && r < kBlock; r += kRowsPerPass) {
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
        const float amax = block_maxima != nullptr ? block_maxima[t] : amax_from_key(key);
        const float s = scale_from_amax(amax, fp8_max(Fmt));
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

/// Columns of x in one tile of quantize_1x128_transposed_kernel (its rows: one 128-row group).
constexpr int kTColumns = 64;
/// Row pitch of the shared tile in floats: 65 puts tile[r][c] in bank (r + c) % 32, so that a warp reading
/// one column (32 consecutive rows) hits 32 different banks.
constexpr int kTPitch = kTColumns + 1;

/// Quantises the 128 floats v (lane l holding entries l + 32j) with their shared scale; the codes go through
/// `stage` (128 bytes of shared memory) so that lane l stores bytes 4l .. 4l+3 of `dst` (one 4-byte store when
/// word_stores). Returns the scale. Every lane of the warp must call it.
template <DType Fmt>
__device__ inline float quantize_group_staged(const float (&v)[kPerLane], Fp8Saturation sat, uint8_t* stage,
                                              uint8_t* dst, bool word_stores) {
  const int lane = threadIdx.x % kWarpSize;
  const float scale = warp_group_scale<Fmt>(v);
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) stage[lane + j * kWarpSize] = quantize_value<Fmt>(v[j], scale, sat);
  __syncwarp();
  const uint8_t* src = stage + lane * kPerLane;
  if (word_stores) {
    *reinterpret_cast<uint32_t*>(dst + lane * kPerLane) = *reinterpret_cast<const uint32_t*>(src);
  } else {
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) dst[lane * kPerLane + j] = src[j];
  }
  __syncwarp();  // stage is read before the warp's next group rewrites it
  return scale;
}

/// What a shared tile holds of an input of dtype In: the input's own 16-bit values (exact, half the shared
/// memory of floats) or floats.
template <DType In>
using TileValue = std::conditional_t<sizeof(storage_t<In>) == 2, storage_t<In>, float>;

/// A tile value as a float (the input's value, exactly).
template <DType In>
__device__ inline float tile_float(TileValue<In> v) {
  if constexpr (std::is_same_v<TileValue<In>, float>) {
    return v;
  } else {
    return load_float<In>(v);
  }
}

/// Loads rows m0 .. m0 + 127 and columns k0 .. k0 + width - 1 of x [.., cols] into `tile` (`pitch` values a
/// row; T: float, or In's own 16-bit values, TileValue): kColumns / Vec threads a tile row, Vec consecutive
/// elements each, 256 / (kColumns / Vec) rows a pass; every load is issued before the first shared store, so
/// that they are all in flight.
template <DType In, int Vec, int kColumns, typename T>
__device__ inline void load_tile(const storage_t<In>* x, int64_t cols, int64_t m0, int64_t k0, int64_t width,
                                 T* tile, int pitch) {
  constexpr int kThreadsPerRow = kColumns / Vec;
  constexpr int kRowsPerPass = kThreads / kThreadsPerRow;
  constexpr int kPasses = kBlock / kRowsPerPass;
  using S = storage_t<In>;
  const int lcol = (threadIdx.x % kThreadsPerRow) * Vec, lrow = threadIdx.x / kThreadsPerRow;
  if (lcol >= width) return;
  Pack<S, Vec> v[kPasses];
  const S* src = x + (m0 + lrow) * cols + k0 + lcol;
#pragma unroll
  for (int p = 0; p < kPasses; ++p) v[p] = *reinterpret_cast<const Pack<S, Vec>*>(src + p * kRowsPerPass * cols);
#pragma unroll
  for (int p = 0; p < kPasses; ++p) {
#pragma unroll
    for (int i = 0; i < Vec; ++i) {
      if constexpr (std::is_same_v<T, float>) {
        tile[(lrow + p * kRowsPerPass) * pitch + lcol + i] = load_float<In>(v[p].v[i]);
      } else {
        tile[(lrow + p * kRowsPerPass) * pitch + lcol + i] = v[p].v[i];
      }
    }
  }
}

/// Warp w quantises tile columns w, w + 8, .. < width (lane l holding rows l + 32j): the 1x128 groups (k0 + c,
/// mb) of x^T into codes [cols, rows] and scale_inv (ld). With `last` (the row group's last column tile) the
/// block also writes the group column's padding entries (k in [cols, ld)).
template <DType Fmt, DType In, typename T>
__device__ inline void quantize_tile_columns(const T* tile, int pitch, int64_t width, int64_t rows, int64_t cols,
                                             int64_t m0, int64_t k0, int64_t mb, int64_t ld, bool last,
                                             Fp8Saturation sat, bool word_stores, uint8_t* stage, uint8_t* codes,
                                             float* scale_inv) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  for (int c = warp; c < width; c += kWarpsPerBlock) {  // uniform across the warp
    float v[kPerLane];
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      if constexpr (std::is_same_v<T, float>) {
        v[j] = tile[(lane + j * kWarpSize) * pitch + c];
      } else {
        v[j] = tile_float<In>(tile[(lane + j * kWarpSize) * pitch + c]);
      }
    }
    const int64_t k = k0 + c;
    const float scale = quantize_group_staged<Fmt>(v, sat, stage, codes + k * rows + m0, word_stores);
    if (lane == 0) scale_inv[fp8block::scale_index_1x128(k, mb, ld)] = scale_inv_from_scale(scale);
  }
  if (last && threadIdx.x < ld - cols) {
    scale_inv[fp8block::scale_index_1x128(cols + threadIdx.x, mb, ld)] = fp8block::kPadScaleInv;
  }
}

/// One 256-thread block per tile t = mb * ktiles + kt: rows 128*mb .. +127 and columns 64*kt .. +63 of
/// x [rows, cols] (rows % 128 == 0), whose columns are the 1x128 groups (k, mb) of x^T. Loads: 64/Vec
/// threads per tile row, Vec consecutive elements each (Vec == 4 needs cols % 4 == 0 and an aligned x),
/// columns past `cols` skipped. Then warp w quantises columns w, w + 8, ..: lane l holds rows l + 32j,
/// the warp's amax gives the scale, the codes go through `stage` so that lane l stores bytes 4l .. 4l+3 of
/// the code row (one 4-byte store when `codes` is 4-byte aligned, else 4 byte stores). The block with the
/// last column tile of a row group also writes that group column's padding entries (k in [cols, ld)).
template <DType In, DType Fmt, int Vec>
__global__ __launch_bounds__(kThreads) void quantize_1x128_transposed_kernel(const storage_t<In>* x, int64_t rows,
                                                                             int64_t cols, int64_t ld,
                                                                             Fp8Saturation sat, bool word_stores,
                                                                             uint8_t* codes, float* scale_inv) {
  __shared__ float tile[kBlock][kTPitch];
  __shared__ __align__(16) uint8_t stage[kWarpsPerBlock][kBlock];
  const int warp = threadIdx.x / kWarpSize;
  const int64_t ktiles = (cols + kTColumns - 1) / kTColumns, tiles = rows / kBlock * ktiles;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t mb = t / ktiles, kt = t % ktiles;
    const int64_t m0 = mb * kBlock, k0 = kt * kTColumns;
    const int64_t width = cols - k0 < kTColumns ? cols - k0 : kTColumns;  // columns of this tile
    load_tile<In, Vec, kTColumns>(x, cols, m0, k0, width, &tile[0][0], kTPitch);
    __syncthreads();
    quantize_tile_columns<Fmt, In>(&tile[0][0], kTPitch, width, rows, cols, m0, k0, mb, ld, kt == ktiles - 1,
                                   sat, word_stores, stage[warp], codes, scale_inv);
    __syncthreads();  // the tile is read before the next iteration overwrites it
  }
}

/// Row pitch of the pair kernel's tile (its rows: a 128-row group of x, one 1x128 group of x a row), in values:
/// an odd number of 4-byte words (129 floats, or 130 16-bit values), so that a warp reading one column (32
/// consecutive rows) meets 32 different banks.
template <DType In>
constexpr int kPairPitch = sizeof(TileValue<In>) == 4 ? kBlock + 1 : kBlock + 2;
/// Dynamic shared memory of the pair kernel: the tile (BF16/F16 inputs keep their own 16-bit values, 33 KB,
/// so twice as many blocks fit on an SM as with the 66 KB of floats).
template <DType In>
constexpr size_t kPairTileBytes = sizeof(TileValue<In>) * kBlock * kPairPitch<In>;

/// quantize_1x128 and quantize_1x128_transposed of x [rows, cols] (both multiples of 128) from one read: block
/// b takes tiles t = mb * ktiles + kt (rows 128 mb.., columns 128 kt..), loaded with coalesced row-wise reads
/// (Vec consecutive elements a thread) into the shared tile; warp w then quantises tile rows w, w + 8, .. (the
/// groups of x: codes, scale_inv with ld `ld`) and tile columns w, w + 8, .. (the groups of x^T: codes_t,
/// scale_inv_t with ld `ld_t`). Padding entries as the two kernels write them.
template <DType In, DType Fmt, int Vec>
__global__ __launch_bounds__(kThreads) void quantize_1x128_pair_kernel(const storage_t<In>* x, int64_t rows,
                                                                       int64_t cols, int64_t ld, int64_t ld_t,
                                                                       Fp8Saturation sat, bool word_stores,
                                                                       uint8_t* codes, float* scale_inv,
                                                                       uint8_t* codes_t, float* scale_inv_t) {
  extern __shared__ __align__(16) unsigned char tile_bytes[];
  auto* tile = reinterpret_cast<TileValue<In>*>(tile_bytes);  // [kBlock][kPairPitch<In>]
  constexpr int pitch = kPairPitch<In>;
  __shared__ __align__(16) uint8_t stage[kWarpsPerBlock][kBlock];
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int64_t ktiles = cols / kBlock, tiles = rows / kBlock * ktiles;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t mb = t / ktiles, kt = t % ktiles;
    const int64_t m0 = mb * kBlock, k0 = kt * kBlock;
    load_tile<In, Vec, kBlock>(x, cols, m0, k0, kBlock, tile, pitch);
    __syncthreads();
    for (int r = warp; r < kBlock; r += kWarpsPerBlock) {  // the groups of x
      float v[kPerLane];  // lane l: elements l + 32j of the group (conflict-free shared reads)
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) v[j] = tile_float<In>(tile[r * pitch + lane + j * kWarpSize]);
      const int64_t row = m0 + r;
      const float scale = quantize_group_staged<Fmt>(v, sat, stage[warp], codes + row * cols + k0, word_stores);
      if (lane == 0) scale_inv[fp8block::scale_index_1x128(row, kt, ld)] = scale_inv_from_scale(scale);
      if (row == rows - 1 && lane < ld - rows) {
        scale_inv[fp8block::scale_index_1x128(rows + lane, kt, ld)] = fp8block::kPadScaleInv;
      }
    }
    quantize_tile_columns<Fmt, In>(tile, pitch, kBlock, rows, cols, m0, k0, mb, ld_t, kt == ktiles - 1, sat,
                                   word_stores, stage[warp], codes_t, scale_inv_t);
    __syncthreads();  // the tile is read before the next iteration overwrites it
  }
}

// ---- the pair of a 16-bit input, vectorised (quantize_1x128_pair16_kernel) ----

/// Words (two 16-bit values each) in a row of the pair16 tile: 128 rows of 64 words, unpadded (32 KB).
constexpr int kPairWords = kBlock / 2;
/// Where word w of tile row r lies: r * 64 + (w ^ 4 ((r / 16) % 8)). The XOR moves whole 16-byte vectors, so
/// row vectors stay whole and aligned; a warp reading one word from rows 16c + j (c = 0..7) of 4 adjacent
/// word columns then meets 32 different banks (the column pass), as 8 lanes reading 8 vectors of one row do.
__device__ inline int pair_word(int r, int w) {
  return r * kPairWords + (w ^ (((r >> 4) & 7) << 2));
}

/// The amax key of a 1x128 group held by 8 aligned lanes (16 values each), reduced over those lanes.
__device__ inline uint32_t octet_max_key(uint32_t key) {
  for (int offset = 1; offset < 8; offset <<= 1) key = max_key(key, __shfl_xor_sync(kFullMask, key, offset));
  return key;
}

/// The 8 16-bit values of a 16-byte vector as floats (exact).
template <DType In>
__device__ inline void unpack8(const uint4& q, float* v) {
  const uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[2 * i] = load_float<In>(static_cast<uint16_t>(w[i] & 0xFFFFu));
    v[2 * i + 1] = load_float<In>(static_cast<uint16_t>(w[i] >> 16));
  }
}

/// Codes of n (a multiple of 4) floats with one scale, packed little-endian into n / 4 words.
template <DType Fmt, int N>
__device__ inline void pack_codes(const float* v, float scale, Fp8Saturation sat, uint32_t* out) {
#pragma unroll
  for (int i = 0; i < N / 4; ++i) {
    uint32_t word = 0u;
#pragma unroll
    for (int j = 0; j < 4; ++j) word |= static_cast<uint32_t>(quantize_value<Fmt>(v[4 * i + j], scale, sat)) << (8 * j);
    out[i] = word;
  }
}

/// quantize_1x128_pair of a BF16/F16 x [rows, cols] (multiples of 128) with x 16-byte aligned, codes 8-byte
/// and codes_t 16-byte aligned: the same bytes as quantize_1x128_pair_kernel, with wider accesses and more
/// work in flight. Block b takes tiles t = mb * ktiles + kt; per tile:
///  - load: 8 16-byte vectors a thread, all issued before the first shared store (32 KB in flight a block);
///  - rows (the groups of x): 8 lanes a row, lane s holding elements 8s .. 8s+7 and 64+8s .. 64+8s+7 (two
///    conflict-free 16-byte shared reads), 3 shuffles for the amax, two 8-byte code stores; 4 rows a warp at once;
///  - columns (the groups of x^T): 8 lanes a pair of adjacent columns, lane c holding rows 16c .. 16c+15 (16
///    conflict-free word reads, both columns at once), 3 shuffles each, one 16-byte code store per column.
template <DType In, DType Fmt>
__global__ __launch_bounds__(kThreads, 4) void quantize_1x128_pair16_kernel(const uint16_t* x, int64_t rows,
                                                                            int64_t cols, int64_t ld, int64_t ld_t,
                                                                            Fp8Saturation sat, uint8_t* codes,
                                                                            float* scale_inv, uint8_t* codes_t,
                                                                            float* scale_inv_t) {
  __shared__ __align__(16) uint32_t tile[kBlock * kPairWords];
  constexpr int kLoads = kBlock * kBlock / 8 / kThreads;  // 16-byte vectors a thread: 8
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int sub = lane & 7, group = lane >> 3;  // lane within its octet, octet within the warp
  const int64_t ktiles = cols / kBlock, tiles = rows / kBlock * ktiles;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t mb = t / ktiles, kt = t % ktiles;
    const int64_t m0 = mb * kBlock, k0 = kt * kBlock;
    uint4 in[kLoads];
#pragma unroll
    for (int i = 0; i < kLoads; ++i) {
      const int v = threadIdx.x + kThreads * i, r = v >> 4, q = v & 15;
      in[i] = *reinterpret_cast<const uint4*>(x + (m0 + r) * cols + k0 + 8 * q);
    }
#pragma unroll
    for (int i = 0; i < kLoads; ++i) {
      const int v = threadIdx.x + kThreads * i, r = v >> 4, q = v & 15;
      *reinterpret_cast<uint4*>(&tile[pair_word(r, 4 * q)]) = in[i];
    }
    __syncthreads();
    // The groups of x: tile rows 32 it + 4 warp + group.
#pragma unroll 2
    for (int it = 0; it < kBlock / 32; ++it) {
      const int r = 32 * it + 4 * warp + group;
      float v[16];
      unpack8<In>(*reinterpret_cast<const uint4*>(&tile[pair_word(r, 4 * sub)]), v);
      unpack8<In>(*reinterpret_cast<const uint4*>(&tile[pair_word(r, 4 * (sub + 8))]), v + 8);
      uint32_t key = 0u;
#pragma unroll
      for (int j = 0; j < 16; ++j) key = max_key(key, amax_key(v[j]));
      const float scale = scale_from_amax(amax_from_key(octet_max_key(key)), fp8_max(Fmt));
      uint32_t out[4];
      pack_codes<Fmt, 16>(v, scale, sat, out);
      const int64_t row = m0 + r;
      uint8_t* dst = codes + row * cols + k0;
      *reinterpret_cast<uint2*>(dst + 8 * sub) = make_uint2(out[0], out[1]);
      *reinterpret_cast<uint2*>(dst + 64 + 8 * sub) = make_uint2(out[2], out[3]);
      if (sub == 0) scale_inv[fp8block::scale_index_1x128(row, kt, ld)] = scale_inv_from_scale(scale);
      if (row == rows - 1) {
        for (int64_t p = sub; p < ld - rows; p += 8)
          scale_inv[fp8block::scale_index_1x128(rows + p, kt, ld)] = fp8block::kPadScaleInv;
      }
    }
    // The groups of x^T: word columns 32 it + 4 warp + group (tile columns 2wc, 2wc + 1), rows 16 sub ...
#pragma unroll 1
    for (int it = 0; it < kPairWords / 32; ++it) {
      const int wc = 32 * it + 4 * warp + group;
      float lo[16], hi[16];
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const uint32_t w = tile[pair_word(16 * sub + j, wc)];
        lo[j] = load_float<In>(static_cast<uint16_t>(w & 0xFFFFu));
        hi[j] = load_float<In>(static_cast<uint16_t>(w >> 16));
      }
      uint32_t key_lo = 0u, key_hi = 0u;
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        key_lo = max_key(key_lo, amax_key(lo[j]));
        key_hi = max_key(key_hi, amax_key(hi[j]));
      }
      key_lo = octet_max_key(key_lo);
      key_hi = octet_max_key(key_hi);
      const float scale_lo = scale_from_amax(amax_from_key(key_lo), fp8_max(Fmt));
      const float scale_hi = scale_from_amax(amax_from_key(key_hi), fp8_max(Fmt));
      const int64_t k = k0 + 2 * wc;
      uint32_t out[4];
      pack_codes<Fmt, 16>(lo, scale_lo, sat, out);
      *reinterpret_cast<uint4*>(codes_t + k * rows + m0 + 16 * sub) = make_uint4(out[0], out[1], out[2], out[3]);
      pack_codes<Fmt, 16>(hi, scale_hi, sat, out);
      *reinterpret_cast<uint4*>(codes_t + (k + 1) * rows + m0 + 16 * sub) =
          make_uint4(out[0], out[1], out[2], out[3]);
      if (sub == 0) {
        scale_inv_t[fp8block::scale_index_1x128(k, mb, ld_t)] = scale_inv_from_scale(scale_lo);
        scale_inv_t[fp8block::scale_index_1x128(k + 1, mb, ld_t)] = scale_inv_from_scale(scale_hi);
      }
    }
    if (kt == ktiles - 1 && threadIdx.x < ld_t - cols) {
      scale_inv_t[fp8block::scale_index_1x128(cols + threadIdx.x, mb, ld_t)] = fp8block::kPadScaleInv;
    }
    __syncthreads();  // the tile is read before the next iteration overwrites it
  }
}

/// Entry i = nb * ld + kb of the 128x128 scale layout [nblocks][ld]: scale_inv of block (nb, kb) with amax
/// maxima[nb * kblocks + kb], or the padding's 1.0f (kb >= kblocks).
__global__ __launch_bounds__(kThreads) void scale_inv_128x128_kernel(const float* maxima, int64_t nblocks,
                                                                     int64_t kblocks, int64_t ld,
                                                                     float fmt_max, float* scale_inv) {
  const int64_t n = nblocks * ld;
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    const int64_t nb = i / ld, kb = i % ld;
    scale_inv[i] = kb < kblocks ? scale_inv_from_scale(scale_from_amax(maxima[nb * kblocks + kb], fmt_max))
                                : fp8block::kPadScaleInv;
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

void quantize_1x128_transposed(const Tensor& x, Fp8Saturation sat, Tensor& codes, Tensor& scale_inv) {
  constexpr const char* op = "quantize_1x128_transposed";
  fp8math::check_high_precision_input(x, op);
  fp8math::check_contiguous_on(x, op, "input", x.device());
  COAT_ARG_CHECK(x.device().is_cuda(), op, "input ", x.str(), " is not on a CUDA device");
  COAT_ARG_CHECK(x.dim() == 2 && x.size(0) % kBlock == 0, op, "input ", shape_str(x.shape()),
                 " must be 2-D [M,K] with M a multiple of ", kBlock, " (the groups of x^T run along M)");
  const int64_t rows = x.size(0), cols = x.size(1);
  const Shape t_shape{cols, rows};
  fp8math::check_codes(codes, t_shape, op, "codes", x.device());
  fp8block::check_block_scales(scale_inv, fp8block::scale_shape_1x128(t_shape, op), op, x.device());
  const int64_t tiles = rows / kBlock * ((cols + kTColumns - 1) / kTColumns);
  if (tiles == 0) return;  // M == 0: no scale rows; K == 0: ld == 0, no padding either
  const int64_t ld = fp8block::scale_ld_1x128(cols);
  const unsigned blocks = grid_for(x, tiles * kThreads, kThreads);
  // Vector loads need every row start aligned too (cols % 4 == 0); code rows start at multiples of 128 bytes.
  const bool vectorized = cols % kVec == 0 && aligned_to(x.data_ptr(), kVec * dtype_size(x.dtype()));
  const bool word_stores = aligned_to(codes.data_ptr(), kPerLane);
  cudaStream_t stream = stream_of(x);
  dispatch_float_dtype(x.dtype(), op, [&](auto in) {
    constexpr DType In = decltype(in)::value;
    dispatch_fp8_format(codes.dtype(), op, [&](auto f) {
      constexpr DType Fmt = decltype(f)::value;
      if (vectorized) {
        quantize_1x128_transposed_kernel<In, Fmt, kVec><<<blocks, kThreads, 0, stream>>>(
            input_data<In>(x), rows, cols, ld, sat, word_stores, code_data(codes), scale_inv.data<float>());
      } else {
        quantize_1x128_transposed_kernel<In, Fmt, 1><<<blocks, kThreads, 0, stream>>>(
            input_data<In>(x), rows, cols, ld, sat, word_stores, code_data(codes), scale_inv.data<float>());
      }
      COAT_CUDA_CHECK_LAST_LAUNCH();
    });
  });
}

namespace {

/// Launches quantize_128x128_kernel (block_maxima: the tiles' amaxes, or null to take them from w).
void launch_quantize_128x128(const char* op, const Tensor& w, const float* block_maxima, Fp8Saturation sat,
                             Tensor& codes, Tensor& scale_inv) {
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
        quantize_128x128_kernel<In, Fmt, kVec>
            <<<blocks, kThreads, 0, stream>>>(input_data<In>(w), block_maxima, nblocks, kblocks, ld, sat,
                                              code_data(codes), scale_inv.data<float>());
      } else {
        quantize_128x128_kernel<In, Fmt, 1>
            <<<blocks, kThreads, 0, stream>>>(input_data<In>(w), block_maxima, nblocks, kblocks, ld, sat,
                                              code_data(codes), scale_inv.data<float>());
      }
      COAT_CUDA_CHECK_LAST_LAUNCH();
    });
  });
}

}  // namespace

void quantize_1x128_pair(const Tensor& x, Fp8Saturation sat, Tensor& codes, Tensor& scale_inv, Tensor& codes_t,
                         Tensor& scale_inv_t) {
  constexpr const char* op = "quantize_1x128_pair";
  fp8block::check_quantize_1x128(x, codes, scale_inv, x.device());
  COAT_ARG_CHECK(x.device().is_cuda(), op, "input ", x.str(), " is not on a CUDA device");
  COAT_ARG_CHECK(x.size(0) % kBlock == 0, op, "input ", shape_str(x.shape()), " must have a multiple of ", kBlock,
                 " rows (the groups of x^T run along them)");
  const int64_t rows = x.size(0), cols = x.size(1);
  const Shape t_shape{cols, rows};
  fp8math::check_codes(codes_t, t_shape, op, "codes_t", x.device());
  fp8block::check_block_scales(scale_inv_t, fp8block::scale_shape_1x128(t_shape, op), op, x.device());
  const int64_t tiles = rows / kBlock * (cols / kBlock);
  if (tiles == 0) return;  // no group either way, no padding either
  const int64_t ld = fp8block::scale_ld_1x128(rows), ld_t = fp8block::scale_ld_1x128(cols);
  const unsigned blocks = grid_for(x, tiles * kThreads, kThreads);
  const bool vectorized = aligned_to(x.data_ptr(), kVec * dtype_size(x.dtype()));  // cols % 128 == 0
  const bool word_stores = aligned_to(codes.data_ptr(), kPerLane) && aligned_to(codes_t.data_ptr(), kPerLane);
  // The wide kernel: 16-bit x in 16-byte vectors, code rows in 8 bytes, code columns in 16 bytes.
  const bool wide = dtype_size(x.dtype()) == 2 && aligned_to(x.data_ptr(), 16) && aligned_to(codes.data_ptr(), 8) &&
                    aligned_to(codes_t.data_ptr(), 16);
  const unsigned wide_blocks = static_cast<unsigned>(
      std::min<int64_t>(tiles, int64_t{16} * context_of(x).properties().multiprocessor_count));
  cudaStream_t stream = stream_of(x);
  dispatch_float_dtype(x.dtype(), op, [&](auto in) {
    constexpr DType In = decltype(in)::value;
    dispatch_fp8_format(codes.dtype(), op, [&](auto f) {
      constexpr DType Fmt = decltype(f)::value;
      const auto launch = [&](auto kernel) {
        COAT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(kPairTileBytes<In>)));
        kernel<<<blocks, kThreads, kPairTileBytes<In>, stream>>>(input_data<In>(x), rows, cols, ld, ld_t, sat,
                                                             word_stores, code_data(codes), scale_inv.data<float>(),
                                                             code_data(codes_t), scale_inv_t.data<float>());
        COAT_CUDA_CHECK_LAST_LAUNCH();
      };
      if constexpr (sizeof(storage_t<In>) == 2) {
        if (wide) {
          quantize_1x128_pair16_kernel<In, Fmt><<<wide_blocks, kThreads, 0, stream>>>(
              input_data<In>(x), rows, cols, ld, ld_t, sat, code_data(codes), scale_inv.data<float>(),
              code_data(codes_t), scale_inv_t.data<float>());
          COAT_CUDA_CHECK_LAST_LAUNCH();
          return;
        }
      }
      if (vectorized) {
        launch(quantize_1x128_pair_kernel<In, Fmt, kVec>);
      } else {
        launch(quantize_1x128_pair_kernel<In, Fmt, 1>);
      }
    });
  });
}

void quantize_128x128(const Tensor& w, Fp8Saturation sat, Tensor& codes, Tensor& scale_inv) {
  fp8block::check_quantize_128x128(w, codes, scale_inv, w.device());
  launch_quantize_128x128("quantize_128x128", w, nullptr, sat, codes, scale_inv);
}

void quantize_128x128_with_maxima(const Tensor& w, const Tensor& maxima, Fp8Saturation sat, Tensor& codes,
                                  Tensor& scale_inv) {
  fp8block::check_quantize_128x128_with_maxima(w, maxima, codes, scale_inv, w.device());
  launch_quantize_128x128("quantize_128x128_with_maxima", w, maxima.data<const float>(), sat, codes,
                          scale_inv);
}

void scale_inv_128x128_from_maxima(const Tensor& maxima, DType fmt, Tensor& scale_inv) {
  constexpr const char* op = "scale_inv_128x128_from_maxima";
  fp8block::check_scale_inv_128x128_from_maxima(maxima, fmt, scale_inv, maxima.device());
  COAT_ARG_CHECK(maxima.device().is_cuda(), op, "block maxima ", maxima.str(), " are not on a CUDA device");
  const int64_t n = scale_inv.numel();
  if (n == 0) return;
  scale_inv_128x128_kernel<<<grid_for(maxima, n, kThreads), kThreads, 0, stream_of(maxima)>>>(
      maxima.data<const float>(), maxima.size(0), maxima.size(1), scale_inv.size(1), fp8_max(fmt),
      scale_inv.data<float>());
  COAT_CUDA_CHECK_LAST_LAUNCH();
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
