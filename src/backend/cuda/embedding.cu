// CUDA kernels of the embedding: the row gather (with the id range checked on the device) and the
// deterministic backward (stable radix sort of the positions by id, then each (id, column) adds its rows
// in position order, literally the CPU's sequential scatter-add for that element).
#include <cub/device/device_radix_sort.cuh>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>

#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/embedding.h"
#include "coat/backend/cuda/launch.h"
#include "coat/core/float_formats.h"

namespace coat::cuda {
namespace {

constexpr int kThreads = 128;
/// "No bad id": the initial value of the first-bad-position flag (all bytes 0xFF).
constexpr unsigned long long kNoBadPosition = ~0ull;

bool aligned_to(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

template <typename I>
__device__ inline bool id_in_range(I id, int64_t vocab) {
  return static_cast<int64_t>(id) >= 0 && static_cast<int64_t>(id) < vocab;
}

// ---- forward ----

/// One block per row (grid-stride): row n of out <- row ids[n] of weight, U (2, 4, 8 or 16 bytes) per
/// access. A bad id leaves its row unwritten and lowers *bad_position to n.
template <typename U, typename I>
__global__ __launch_bounds__(kThreads) void gather_rows_kernel(const U* __restrict__ weight,
                                                               const I* __restrict__ ids, U* __restrict__ out,
                                                               int64_t rows, int64_t vocab, int64_t units_per_row,
                                                               unsigned long long* bad_position) {
  for (int64_t n = blockIdx.x; n < rows; n += gridDim.x) {
    const I id = ids[n];
    if (!id_in_range(id, vocab)) {
      if (threadIdx.x == 0) atomicMin(bad_position, static_cast<unsigned long long>(n));
      continue;
    }
    const U* src = weight + static_cast<int64_t>(id) * units_per_row;
    U* dst = out + n * units_per_row;
    for (int64_t j = threadIdx.x; j < units_per_row; j += kThreads) dst[j] = src[j];
  }
}

// ---- backward ----

/// keys[i] = ids[i] (as int32; checked), positions[i] = i.
template <typename I>
__global__ __launch_bounds__(256) void prepare_keys_kernel(const I* __restrict__ ids, int64_t n, int64_t vocab,
                                                           int32_t* __restrict__ keys,
                                                           int32_t* __restrict__ positions,
                                                           unsigned long long* bad_position) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const I id = ids[i];
    if (!id_in_range(id, vocab)) atomicMin(bad_position, static_cast<unsigned long long>(i));
    keys[i] = static_cast<int32_t>(id);
    positions[i] = static_cast<int32_t>(i);
  }
}

__device__ inline float widen_dev(float v) { return v; }
__device__ inline double widen_dev(double v) { return v; }
__device__ inline float widen_dev(uint16_t v) { return bf16_to_float(v); }

/// Block (k, tile) starts at sorted index k; only the first index of each run of equal ids works. Each
/// thread owns one column of the tile and adds the run's dy rows into it in order (the sort is stable,
/// so in position order): acc = G(acc + widen(dy)), the CPU's expression, one IEEE add per row.
template <typename S, typename G>
__global__ __launch_bounds__(kThreads) void accumulate_runs_kernel(const S* __restrict__ dy,
                                                                   const int32_t* __restrict__ sorted_ids,
                                                                   const int32_t* __restrict__ sorted_positions,
                                                                   int64_t n, int64_t d, G* __restrict__ grad) {
  const int64_t k = blockIdx.x;
  const int32_t id = sorted_ids[k];
  if (k > 0 && sorted_ids[k - 1] == id) return;
  const int64_t col = int64_t(blockIdx.y) * kThreads + threadIdx.x;
  if (col >= d) return;
  G* dst = grad + static_cast<int64_t>(id) * d + col;
  G acc = *dst;
  for (int64_t r = k; r < n && sorted_ids[r] == id; ++r) {
    acc = static_cast<G>(acc + widen_dev(dy[static_cast<int64_t>(sorted_positions[r]) * d + col]));
  }
  *dst = acc;
}

template <typename F>
void dispatch_ids(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::I32:
      f(int32_t{});
      return;
    case DType::I64:
      f(int64_t{});
      return;
    default:
      COAT_CHECK(false, NotImplemented, "[", op, "] cuda: no kernel for ids of dtype ", dtype_name(t));
  }
}

/// A one-element device flag set to kNoBadPosition on the tensor's stream.
Tensor new_position_flag(const Tensor& like) {
  Tensor flag = Tensor::empty(like.context(), {1}, DType::I64, MemoryCategory::Workspace);
  COAT_CUDA_CHECK(cudaMemsetAsync(flag.data_ptr(), 0xFF, sizeof(unsigned long long), stream_of(like)));
  return flag;
}

/// Reads the flag back (synchronising the stream); throws the CPU's message for the first bad id.
void throw_if_bad_id(const Tensor& flag, const Tensor& ids, int64_t vocab, const char* op) {
  cudaStream_t stream = stream_of(flag);
  unsigned long long position = kNoBadPosition;
  COAT_CUDA_CHECK(cudaMemcpyAsync(&position, flag.data_ptr(), sizeof position, cudaMemcpyDeviceToHost, stream));
  COAT_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (position == kNoBadPosition) return;
  int64_t id = 0;
  const size_t esize = dtype_size(ids.dtype());
  const auto* src = static_cast<const uint8_t*>(ids.data_ptr()) + position * esize;
  if (ids.dtype() == DType::I64) {
    COAT_CUDA_CHECK(cudaMemcpy(&id, src, esize, cudaMemcpyDeviceToHost));
  } else {
    int32_t id32 = 0;
    COAT_CUDA_CHECK(cudaMemcpy(&id32, src, esize, cudaMemcpyDeviceToHost));
    id = id32;
  }
  COAT_ARG_CHECK(false, op, "id ", id, " at position ", position, " is outside [0, V) with V = ", vocab);
}

template <typename S, typename G>
void launch_accumulate(const Tensor& dy, const int32_t* sorted_ids, const int32_t* sorted_positions, int64_t n,
                       int64_t d, Tensor& grad) {
  const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>((d + kThreads - 1) / kThreads));
  accumulate_runs_kernel<S, G><<<grid, kThreads, 0, stream_of(grad)>>>(
      static_cast<const S*>(dy.data_ptr()), sorted_ids, sorted_positions, n, d, grad.data<G>());
  COAT_CUDA_CHECK_LAST_LAUNCH();
}

template <typename G>
void accumulate_for_grad(const Tensor& dy, const int32_t* sorted_ids, const int32_t* sorted_positions, int64_t n,
                         int64_t d, Tensor& grad) {
  switch (dy.dtype()) {
    case DType::F32:
      launch_accumulate<float, G>(dy, sorted_ids, sorted_positions, n, d, grad);
      return;
    case DType::F64:
      launch_accumulate<double, G>(dy, sorted_ids, sorted_positions, n, d, grad);
      return;
    case DType::BF16:
      launch_accumulate<uint16_t, G>(dy, sorted_ids, sorted_positions, n, d, grad);
      return;
    default:
      COAT_CHECK(false, NotImplemented, "[embedding_backward] cuda: no kernel for dy of dtype ",
                 dtype_name(dy.dtype()));
  }
}

}  // namespace

void embedding(const Tensor& weight, const Tensor& ids, Tensor& out) {
  const int64_t vocab = weight.size(0), rows = ids.numel();
  if (rows == 0) return;
  const size_t row_bytes = static_cast<size_t>(weight.size(1)) * dtype_size(weight.dtype());
  Tensor flag = new_position_flag(out);
  auto* bad = static_cast<unsigned long long*>(flag.data_ptr());
  cudaStream_t stream = stream_of(out);
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(rows, int64_t{1} << 20));
  dispatch_ids(ids.dtype(), "embedding", [&](auto id_type) {
    using I = decltype(id_type);
    const I* p = ids.data<I>();
    auto launch = [&](auto unit) {
      using U = decltype(unit);
      gather_rows_kernel<U, I><<<blocks, kThreads, 0, stream>>>(static_cast<const U*>(weight.data_ptr()), p,
                                                                static_cast<U*>(out.data_ptr()), rows, vocab,
                                                                static_cast<int64_t>(row_bytes / sizeof(U)), bad);
    };
    // The widest access that divides the row and both base addresses.
    auto fits = [&](size_t u) {
      return row_bytes % u == 0 && aligned_to(weight.data_ptr(), u) && aligned_to(out.data_ptr(), u);
    };
    if (fits(16)) {
      launch(uint4{});
    } else if (fits(8)) {
      launch(uint2{});
    } else if (fits(4)) {
      launch(uint32_t{});
    } else {
      launch(uint16_t{});
    }
    COAT_CUDA_CHECK_LAST_LAUNCH();
  });
  throw_if_bad_id(flag, ids, vocab, "embedding");
}

void embedding_backward(const Tensor& dy, const Tensor& ids, Tensor& dweight_accum) {
  const int64_t vocab = dweight_accum.size(0), d = dweight_accum.size(1), n = ids.numel();
  if (n == 0) return;
  COAT_CHECK(n <= INT_MAX && vocab <= INT_MAX, NotImplemented, "[embedding_backward] cuda: ", n, " ids and V = ",
             vocab, " exceed the 32-bit sort keys (at most ", INT_MAX, ")");
  const ContextPtr& ctx = dweight_accum.context();
  cudaStream_t stream = stream_of(dweight_accum);
  Tensor keys = Tensor::empty(ctx, {n}, DType::I32, MemoryCategory::Workspace);
  Tensor positions = Tensor::empty(ctx, {n}, DType::I32, MemoryCategory::Workspace);
  Tensor sorted_keys = Tensor::empty(ctx, {n}, DType::I32, MemoryCategory::Workspace);
  Tensor sorted_positions = Tensor::empty(ctx, {n}, DType::I32, MemoryCategory::Workspace);
  Tensor flag = new_position_flag(dweight_accum);
  // 1. keys and positions, every id checked; nothing of dweight_accum is touched before the check.
  dispatch_ids(ids.dtype(), "embedding_backward", [&](auto id_type) {
    using I = decltype(id_type);
    prepare_keys_kernel<I><<<grid_for(dweight_accum, n, 256), 256, 0, stream>>>(
        ids.data<I>(), n, vocab, keys.data<int32_t>(), positions.data<int32_t>(),
        static_cast<unsigned long long*>(flag.data_ptr()));
    COAT_CUDA_CHECK_LAST_LAUNCH();
  });
  throw_if_bad_id(flag, ids, vocab, "embedding_backward");
  // 2. stable radix sort of the positions by id, over the bits that ids in [0, V) use.
  int end_bit = 1;
  while (end_bit < 31 && (int64_t{1} << end_bit) < vocab) ++end_bit;
  size_t temp_bytes = 0;
  COAT_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys.data<int32_t>(),
                                                  sorted_keys.data<int32_t>(), positions.data<int32_t>(),
                                                  sorted_positions.data<int32_t>(), static_cast<int>(n), 0, end_bit,
                                                  stream));
  Tensor temp = Tensor::empty(ctx, {static_cast<int64_t>(std::max<size_t>(temp_bytes, 1))}, DType::U8,
                              MemoryCategory::Workspace);
  COAT_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.data_ptr(), temp_bytes, keys.data<int32_t>(),
                                                  sorted_keys.data<int32_t>(), positions.data<int32_t>(),
                                                  sorted_positions.data<int32_t>(), static_cast<int>(n), 0, end_bit,
                                                  stream));
  // 3. each run of equal ids, column by column, in position order.
  if (d == 0) return;
  if (dweight_accum.dtype() == DType::F64) {
    accumulate_for_grad<double>(dy, sorted_keys.data<int32_t>(), sorted_positions.data<int32_t>(), n, d,
                                dweight_accum);
  } else {
    accumulate_for_grad<float>(dy, sorted_keys.data<int32_t>(), sorted_positions.data<int32_t>(), n, d,
                               dweight_accum);
  }
}

}  // namespace coat::cuda
