// CUDA kernels: strided copy with conversion, constant/arange fills and Philox random fills.
// Each element runs the same scalar code as the CPU backend (element_access.h, philox.h): same bits.
#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/copy.h"
#include "coat/backend/cuda/device_vector.cuh"
#include "coat/backend/cuda/launch.h"
#include "coat/backend/cuda/transpose.h"
#include "coat/backend/element_access.h"
#include "coat/backend/strided_layout.h"
#include "coat/core/philox.h"

#include <algorithm>
#include <cmath>

namespace coat::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void copy_convert_kernel(const void* src, StridedLayout in, DType src_dtype, void* dst,
                                    StridedLayout out, DType dst_dtype, Fp8Saturation sat, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    convert_element(src, in.offset_of(i), src_dtype, dst, out.offset_of(i), dst_dtype, sat);
  }
}

// Contiguous conversion between F32 and BF16 (the compute-weight refresh after each optimizer step), eight
// elements per thread with vector loads and stores; the same element conversion as the kernel above.
template <typename S, typename D>
__global__ void convert_vec_kernel(const S* src, DType src_dtype, D* dst, DType dst_dtype, int64_t n) {
  constexpr int kN = 8;
  const int64_t vecs = n / kN;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t v = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; v < vecs; v += stride) {
    const Pack<S, kN> in = reinterpret_cast<const Pack<S, kN>*>(src)[v];
    Pack<D, kN> out;
#pragma unroll
    for (int k = 0; k < kN; ++k) {
      store_from_double(&out.v[k], 0, dst_dtype, load_as_double(&in.v[k], 0, src_dtype));
    }
    reinterpret_cast<Pack<D, kN>*>(dst)[v] = out;
  }
  for (int64_t i = vecs * kN + blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    store_from_double(dst, i, dst_dtype, load_as_double(src, i, src_dtype));
  }
}

template <typename S, typename D>
bool try_convert_vec(const Tensor& src, Tensor& dst, int64_t n) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(src.data_ptr()), b = reinterpret_cast<uintptr_t>(dst.data_ptr());
  if (a % (8 * sizeof(S)) != 0 || b % (8 * sizeof(D)) != 0) return false;
  const int64_t vecs = std::max<int64_t>(n / 8, 1);
  convert_vec_kernel<S, D><<<grid_for(dst, vecs, kThreads), kThreads, 0, stream_of(dst)>>>(
      static_cast<const S*>(src.data_ptr()), src.dtype(), static_cast<D*>(dst.data_ptr()), dst.dtype(), n);
  COAT_CUDA_CHECK_LAST_LAUNCH();
  return true;
}

__global__ void fill_kernel(void* dst, StridedLayout out, DType dtype, double value, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    store_from_double(dst, out.offset_of(i), dtype, value);
  }
}

__global__ void arange_kernel(void* dst, DType dtype, double start, double step, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    store_from_double(dst, i, dtype, start + static_cast<double>(i) * step);
  }
}

__global__ void uniform_kernel(void* dst, DType dtype, uint64_t seed, uint64_t offset, float low, float high,
                               int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    store_from_double(dst, i, dtype, philox_uniform(seed, offset, static_cast<uint64_t>(i), low, high));
  }
}

__global__ void normal_kernel(void* dst, DType dtype, uint64_t seed, uint64_t offset, float mean, float std,
                              int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    store_from_double(dst, i, dtype, philox_normal(seed, offset, static_cast<uint64_t>(i), mean, std));
  }
}

}  // namespace

void copy(const Tensor& src, Tensor& dst, Fp8Saturation sat) {
  const int64_t n = src.numel();
  if (n == 0) return;
  if (src.dtype() == dst.dtype() && src.is_contiguous() && dst.is_contiguous()) {
    COAT_CUDA_CHECK(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), src.nbytes(), cudaMemcpyDeviceToDevice,
                                    stream_of(dst)));
    return;
  }
  if (try_transpose_copy(src, dst)) return;
  if (src.is_contiguous() && dst.is_contiguous()) {
    if (src.dtype() == DType::F32 && dst.dtype() == DType::BF16 && try_convert_vec<float, uint16_t>(src, dst, n)) return;
    if (src.dtype() == DType::BF16 && dst.dtype() == DType::F32 && try_convert_vec<uint16_t, float>(src, dst, n)) return;
  }
  copy_convert_kernel<<<grid_for(dst, n, kThreads), kThreads, 0, stream_of(dst)>>>(
      src.data_ptr(), strided_layout_of(src), src.dtype(), dst.data_ptr(), strided_layout_of(dst), dst.dtype(),
      sat, n);
  COAT_CUDA_CHECK_LAST_LAUNCH();
}

void fill(Tensor& dst, double value) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  // +0.0 is the all-zero bit pattern in every dtype: zeroing gradient buffers is a memset.
  if (value == 0.0 && !std::signbit(value) && dst.is_contiguous()) {
    COAT_CUDA_CHECK(cudaMemsetAsync(dst.data_ptr(), 0, dst.nbytes(), stream_of(dst)));
    return;
  }
  fill_kernel<<<grid_for(dst, n, kThreads), kThreads, 0, stream_of(dst)>>>(
      dst.data_ptr(), strided_layout_of(dst), dst.dtype(), value, n);
  COAT_CUDA_CHECK_LAST_LAUNCH();
}

void arange(Tensor& dst, double start, double step) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  arange_kernel<<<grid_for(dst, n, kThreads), kThreads, 0, stream_of(dst)>>>(dst.data_ptr(), dst.dtype(), start,
                                                                             step, n);
  COAT_CUDA_CHECK_LAST_LAUNCH();
}

void fill_uniform(Tensor& dst, uint64_t seed, uint64_t offset, float low, float high) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  uniform_kernel<<<grid_for(dst, n, kThreads), kThreads, 0, stream_of(dst)>>>(dst.data_ptr(), dst.dtype(), seed,
                                                                              offset, low, high, n);
  COAT_CUDA_CHECK_LAST_LAUNCH();
}

void fill_normal(Tensor& dst, uint64_t seed, uint64_t offset, float mean, float std) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  normal_kernel<<<grid_for(dst, n, kThreads), kThreads, 0, stream_of(dst)>>>(dst.data_ptr(), dst.dtype(), seed,
                                                                             offset, mean, std, n);
  COAT_CUDA_CHECK_LAST_LAUNCH();
}

}  // namespace coat::cuda
