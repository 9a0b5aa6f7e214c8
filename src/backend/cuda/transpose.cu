// The tiled transpose copy (transpose.h): a 64 x 64 tile of the source is read row by row into shared
// memory and written out column by column, so that both global accesses are consecutive across a warp; bytes
// whose sides are multiples of 4 move as 4-byte words.
#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/launch.h"
#include "coat/backend/cuda/transpose.h"

#include <cstdint>

namespace coat::cuda {
namespace {

constexpr int kTile = 64;
constexpr int kRowsPerPass = 4;  // a block of kTile x kRowsPerPass threads walks the tile in passes
constexpr int64_t kMaxGridY = 65535;

// in: [rows, cols] contiguous; out: [cols, rows] contiguous, out[c][r] = in[r][c]. blockIdx.x tiles the columns,
// blockIdx.y the rows.
template <typename T>
__global__ void transpose_kernel(const T* __restrict__ in, T* __restrict__ out, int64_t rows, int64_t cols) {
  __shared__ T tile[kTile][kTile + 1];
  const int64_t r0 = int64_t(blockIdx.y) * kTile, c0 = int64_t(blockIdx.x) * kTile;
  for (int i = threadIdx.y; i < kTile; i += kRowsPerPass) {
    const int64_t r = r0 + i, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[i][threadIdx.x] = in[r * cols + c];
  }
  __syncthreads();
  for (int i = threadIdx.y; i < kTile; i += kRowsPerPass) {
    const int64_t c = c0 + i, r = r0 + threadIdx.x;
    if (c < cols && r < rows) out[c * rows + r] = tile[threadIdx.x][i];
  }
}

// 1-byte elements with both sides multiples of 4 (FP8 weight and activation codes): the same 64 x 64 tile, read
// and written as 4-byte words, 16 to a tile row, so that a warp moves 128 bytes per access instead of 32. A
// thread's output word packs 4 consecutive input rows of one column.
constexpr int kWordsPerTileRow = kTile / 4;
constexpr int kByteThreads = 256;

__global__ void transpose_bytes_kernel(const uint32_t* __restrict__ in, uint32_t* __restrict__ out, int64_t rows,
                                       int64_t cols) {
  __shared__ __align__(4) uint8_t tile[kTile][kTile + 4];
  const int64_t r0 = int64_t(blockIdx.y) * kTile, c0 = int64_t(blockIdx.x) * kTile;
  const int word = threadIdx.x % kWordsPerTileRow, first = threadIdx.x / kWordsPerTileRow;
  constexpr int kRowsPerPassBytes = kByteThreads / kWordsPerTileRow;
  for (int i = first; i < kTile; i += kRowsPerPassBytes) {
    const int64_t r = r0 + i, c = c0 + 4 * word;
    if (r < rows && c < cols) *reinterpret_cast<uint32_t*>(&tile[i][4 * word]) = in[(r * cols + c) / 4];
  }
  __syncthreads();
  for (int i = first; i < kTile; i += kRowsPerPassBytes) {
    const int64_t c = c0 + i, r = r0 + 4 * word;
    if (c < cols && r < rows) {
      const int j = 4 * word;
      out[(c * rows + r) / 4] = uint32_t(tile[j][i]) | uint32_t(tile[j + 1][i]) << 8 |
                                uint32_t(tile[j + 2][i]) << 16 | uint32_t(tile[j + 3][i]) << 24;
    }
  }
}

bool launch_bytes(const Tensor& src, Tensor& dst, int64_t in_rows, int64_t in_cols) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 4 == 0; };
  if (in_rows % 4 != 0 || in_cols % 4 != 0 || !aligned(src.data_ptr()) || !aligned(dst.data_ptr())) return false;
  const dim3 grid(static_cast<unsigned>((in_cols + kTile - 1) / kTile), static_cast<unsigned>((in_rows + kTile - 1) / kTile));
  transpose_bytes_kernel<<<grid, kByteThreads, 0, stream_of(dst)>>>(static_cast<const uint32_t*>(src.data_ptr()),
                                                                    static_cast<uint32_t*>(dst.data_ptr()), in_rows, in_cols);
  COAT_CUDA_CHECK_LAST_LAUNCH();
  return true;
}

template <typename T>
void launch(const Tensor& src, Tensor& dst, int64_t in_rows, int64_t in_cols) {
  const dim3 grid(static_cast<unsigned>((in_cols + kTile - 1) / kTile), static_cast<unsigned>((in_rows + kTile - 1) / kTile));
  transpose_kernel<T><<<grid, dim3(kTile, kRowsPerPass), 0, stream_of(dst)>>>(
      static_cast<const T*>(src.data_ptr()), static_cast<T*>(dst.data_ptr()), in_rows, in_cols);
  COAT_CUDA_CHECK_LAST_LAUNCH();
}

}  // namespace

bool try_transpose_copy(const Tensor& src, Tensor& dst) {
  if (src.dim() != 2 || src.dtype() != dst.dtype() || !dst.is_contiguous() || src.shape() != dst.shape()) return false;
  const int64_t rows = src.size(0), cols = src.size(1);  // of the view; the data beneath is [cols, rows]
  if (rows < 2 || cols < 2 || src.stride(0) != 1 || src.stride(1) != rows) return false;
  if ((cols + kTile - 1) / kTile > kMaxGridY) return false;  // grid y tiles the data's rows, the view's columns
  switch (dtype_size(src.dtype())) {
    case 1:
      if (!launch_bytes(src, dst, cols, rows)) launch<uint8_t>(src, dst, cols, rows);
      return true;
    case 2: launch<uint16_t>(src, dst, cols, rows); return true;
    case 4: launch<uint32_t>(src, dst, cols, rows); return true;
    default: return false;
  }
}

}  // namespace coat::cuda
