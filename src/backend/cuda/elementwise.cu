// CUDA kernels: element-wise arithmetic and deterministic sums (fixed grid, fixed reduction order).
#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/elementwise.h"
#include "coat/backend/cuda/launch.h"
#include "coat/backend/cuda/device_vector.cuh"
#include "coat/backend/element_access.h"

namespace coat::cuda {
namespace {

constexpr int kThreads = 256;
// The sum uses a fixed number of blocks so that its reduction order, and so its result, never changes
// between runs.
constexpr int kSumBlocks = 512;

__global__ void binary_kernel(BinaryOp op, const void* a, const void* b, void* out, DType t, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    store_from_double(out, i, t, apply_binary(op, load_as_double(a, i, t), load_as_double(b, i, t)));
  }
}

// The same results for contiguous F32 or BF16 operands with 16-byte vector loads and stores (the generic
// kernel above re-dispatches on the dtype per element and reaches about a third of the copy bandwidth).
// F32: widened to double, the op applied, rounded once, as above. BF16: in float, which gives the same bits:
// the product of two 8-bit significands is exact in float, and so is a sum or difference whose exponents
// differ by at most 15; beyond that the smaller operand is below 2^-16 of the larger, and both the exact
// result and its float rounding round to the larger operand's BF16 neighbourhood identically (a BF16 value
// lies 2^-9 relative away from any BF16 rounding midpoint, far more than one float ulp).
template <typename S>
__device__ __forceinline__ typename Elem<S>::A apply_binary_acc(BinaryOp op, typename Elem<S>::A x, typename Elem<S>::A y) {
  switch (op) {
    case BinaryOp::Add: return add_rn(x, y);
    case BinaryOp::Sub: return sub_rn(x, y);
    case BinaryOp::Mul: return mul_rn(x, y);
  }
  return x;
}

template <typename S>
__global__ void binary_vec_kernel(BinaryOp op, const S* a, const S* b, S* out, int64_t n, DType t) {
  constexpr int kVec = kVec16<S>;
  using P = Pack<S, kVec>;
  using E = Elem<S>;
  const int64_t vecs = n / kVec;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t v = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; v < vecs; v += stride) {
    const P pa = reinterpret_cast<const P*>(a)[v];
    const P pb = reinterpret_cast<const P*>(b)[v];
    P po;
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      if constexpr (sizeof(S) == 2) {
        po.v[k] = E::store(apply_binary_acc<S>(op, E::load(pa.v[k]), E::load(pb.v[k])));
      } else {
        const double x = load_as_double(&pa.v[k], 0, t), y = load_as_double(&pb.v[k], 0, t);
        store_from_double(&po.v[k], 0, t, apply_binary(op, x, y));
      }
    }
    reinterpret_cast<P*>(out)[v] = po;
  }
  for (int64_t i = vecs * kVec + blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    store_from_double(out, i, t, apply_binary(op, load_as_double(a, i, t), load_as_double(b, i, t)));
  }
}

__global__ void scale_kernel(const void* a, double factor, void* out, DType t, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    store_from_double(out, i, t, load_as_double(a, i, t) * factor);
  }
}

__global__ void reciprocal_kernel(const void* a, DType ta, void* out, DType tout, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    store_from_double(out, i, tout, 1.0 / load_as_double(a, i, ta));
  }
}

// Sum of one value per thread over the block, in a fixed tree order; the result is valid in thread 0.
__device__ double block_sum(double v) {
  __shared__ double warp_sums[kThreads / 32];
  for (int shift = 16; shift > 0; shift >>= 1) v += __shfl_down_sync(0xffffffffu, v, shift);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = threadIdx.x < blockDim.x / 32 ? warp_sums[threadIdx.x] : 0.0;
  if (warp == 0) {
    for (int shift = 16; shift > 0; shift >>= 1) v += __shfl_down_sync(0xffffffffu, v, shift);
  }
  __syncthreads();  // warp_sums may be reused by the next call
  return v;
}

__global__ void partial_sum_kernel(const void* x, DType t, int64_t n, double* partials) {
  double v = 0.0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    v += load_as_double(x, i, t);
  }
  v = block_sum(v);
  if (threadIdx.x == 0) partials[blockIdx.x] = v;
}

__global__ void final_sum_kernel(const double* partials, int count, void* out, DType out_dtype) {
  double v = 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) v += partials[i];
  v = block_sum(v);
  if (threadIdx.x == 0) store_from_double(out, 0, out_dtype, v);
}

__global__ void row_sum_kernel(const void* x, DType t, int64_t rows, int64_t cols, void* out, DType out_dtype) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    double v = 0.0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) v += load_as_double(x, r * cols + c, t);
    v = block_sum(v);
    if (threadIdx.x == 0) store_from_double(out, r, out_dtype, v);
  }
}

}  // namespace

void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  const int64_t n = a.numel();
  if (n == 0) return;
  const DType t = a.dtype();
  if ((t == DType::BF16 || t == DType::F32) && b.dtype() == t && out.dtype() == t && aligned16(a.data_ptr()) &&
      aligned16(b.data_ptr()) && aligned16(out.data_ptr())) {
    auto launch = [&](auto* tag) {
      using S = std::remove_pointer_t<decltype(tag)>;
      const int64_t vecs = std::max<int64_t>(n / kVec16<S>, 1);
      binary_vec_kernel<S><<<grid_for(out, vecs, kThreads), kThreads, 0, stream_of(out)>>>(
          op, static_cast<const S*>(a.data_ptr()), static_cast<const S*>(b.data_ptr()), static_cast<S*>(out.data_ptr()),
          n, t);
    };
    if (t == DType::BF16) {
      launch(static_cast<uint16_t*>(nullptr));
    } else {
      launch(static_cast<float*>(nullptr));
    }
    COAT_CUDA_CHECK_LAST_LAUNCH();
    return;
  }
  binary_kernel<<<grid_for(out, n, kThreads), kThreads, 0, stream_of(out)>>>(op, a.data_ptr(), b.data_ptr(),
                                                                             out.data_ptr(), a.dtype(), n);
  COAT_CUDA_CHECK_LAST_LAUNCH();
}

void scale(const Tensor& a, double factor, Tensor& out) {
  const int64_t n = a.numel();
  if (n == 0) return;
  scale_kernel<<<grid_for(out, n, kThreads), kThreads, 0, stream_of(out)>>>(a.data_ptr(), factor, out.data_ptr(),
                                                                            a.dtype(), n);
  COAT_CUDA_CHECK_LAST_LAUNCH();
}

void reciprocal(const Tensor& a, Tensor& out) {
  const int64_t n = a.numel();
  if (n == 0) return;
  reciprocal_kernel<<<grid_for(out, n, kThreads), kThreads, 0, stream_of(out)>>>(a.data_ptr(), a.dtype(),
                                                                                 out.data_ptr(), out.dtype(), n);
  COAT_CUDA_CHECK_LAST_LAUNCH();
}

void sum(const Tensor& x, Tensor& out) {
  Tensor partials = Tensor::empty(x.context(), {kSumBlocks}, DType::F64, MemoryCategory::Workspace);
  cudaStream_t stream = stream_of(out);
  partial_sum_kernel<<<kSumBlocks, kThreads, 0, stream>>>(x.data_ptr(), x.dtype(), x.numel(),
                                                          partials.data<double>());
  COAT_CUDA_CHECK_LAST_LAUNCH();
  final_sum_kernel<<<1, kThreads, 0, stream>>>(partials.data<double>(), kSumBlocks, out.data_ptr(), out.dtype());
  COAT_CUDA_CHECK_LAST_LAUNCH();
}

void sum_last_dim(const Tensor& x, Tensor& out) {
  const int64_t cols = x.dim() == 0 ? 1 : x.size(-1);
  const int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  if (rows == 0) return;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(rows, 65535));
  row_sum_kernel<<<blocks, kThreads, 0, stream_of(out)>>>(x.data_ptr(), x.dtype(), rows, cols, out.data_ptr(),
                                                          out.dtype());
  COAT_CUDA_CHECK_LAST_LAUNCH();
}

}  // namespace coat::cuda
