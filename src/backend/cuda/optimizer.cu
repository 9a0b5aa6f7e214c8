// CUDA kernels of the optimizer: the FP32 AdamW update (one launch over a flat buffer, the CPU's scalar
// code per element, so identical bits), the deterministic double-accumulated sum of squares and the
// non-finite flag.
#include <cuda_runtime.h>

#include <cstdint>

#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/launch.h"
#include "coat/backend/cuda/optimizer.h"
#include "coat/backend/element_access.h"
#include "coat/core/float_formats.h"

namespace coat::cuda {
namespace {

constexpr int kThreads = 256;
/// The sum of squares uses a fixed number of blocks (whatever the GPU) so that its reduction order, and
/// so its bits, never change between runs or devices.
constexpr int kSumBlocks = 1024;

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

__device__ inline int64_t global_thread() { return blockIdx.x * int64_t(blockDim.x) + threadIdx.x; }
__device__ inline int64_t grid_threads() { return int64_t(gridDim.x) * blockDim.x; }

// ---- AdamW ----

/// Elements [0, 4 * (n / 4)) as float4 when vectorized, then the rest one by one. The memory traffic is
/// 28 bytes per element (p, g, m, v read; p, m, v written); the loads and stores bypass L1 persistence
/// (__ldcs/__stcs: each byte is touched once).
__global__ __launch_bounds__(kThreads) void adamw_kernel(float* __restrict__ p, const float* __restrict__ g,
                                                         float* __restrict__ m, float* __restrict__ v, int64_t n,
                                                         bool vectorized, adamw_math::AdamWScalars s) {
  int64_t scalar_start = 0;
  if (vectorized) {
    const int64_t nvec = n / 4;
    auto* p4 = reinterpret_cast<float4*>(p);
    auto* m4 = reinterpret_cast<float4*>(m);
    auto* v4 = reinterpret_cast<float4*>(v);
    const auto* g4 = reinterpret_cast<const float4*>(g);
    for (int64_t i = global_thread(); i < nvec; i += grid_threads()) {
      float4 pp = __ldcs(p4 + i);
      const float4 gg = __ldcs(g4 + i);
      float4 mm = __ldcs(m4 + i);
      float4 vv = __ldcs(v4 + i);
      adamw_math::adamw_update(pp.x, gg.x, mm.x, vv.x, s);
      adamw_math::adamw_update(pp.y, gg.y, mm.y, vv.y, s);
      adamw_math::adamw_update(pp.z, gg.z, mm.z, vv.z, s);
      adamw_math::adamw_update(pp.w, gg.w, mm.w, vv.w, s);
      __stcs(p4 + i, pp);
      __stcs(m4 + i, mm);
      __stcs(v4 + i, vv);
    }
    scalar_start = nvec * 4;
  }
  for (int64_t i = scalar_start + global_thread(); i < n; i += grid_threads()) {
    float pi = p[i], mi = m[i], vi = v[i];
    adamw_math::adamw_update(pi, g[i], mi, vi, s);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
  }
}

// ---- sum of squares ----

/// Sum of one value per thread over the block (kThreads threads), in a fixed tree order; valid in thread 0.
__device__ double block_sum(double x) {
  __shared__ double warp_sums[kThreads / 32];
  for (int shift = 16; shift > 0; shift >>= 1) x += __shfl_down_sync(0xffffffffu, x, shift);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = x;
  __syncthreads();
  x = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : 0.0;
  if (warp == 0) {
    for (int shift = 16; shift > 0; shift >>= 1) x += __shfl_down_sync(0xffffffffu, x, shift);
  }
  __syncthreads();
  return x;
}

/// The storage element of a float dtype and its exact conversion to double.
template <DType T>
struct Elem;
template <>
struct Elem<DType::F32> {
  using type = float;
  __device__ static double widen(float x) { return x; }
};
template <>
struct Elem<DType::F64> {
  using type = double;
  __device__ static double widen(double x) { return x; }
};
template <>
struct Elem<DType::BF16> {
  using type = uint16_t;
  __device__ static double widen(uint16_t x) { return bf16_to_float(x); }
};
template <>
struct Elem<DType::F16> {
  using type = uint16_t;
  __device__ static double widen(uint16_t x) { return f16_to_float(x); }
};

template <typename S, int N>
struct alignas(sizeof(S) * N) Pack {
  S v[N];
};

/// partials[block] = the block's sum of squares; Vec elements per 16-byte load when vectorized (the
/// first Vec * (n / Vec) elements), the rest one by one.
template <DType T>
__global__ __launch_bounds__(kThreads) void sum_squares_partial_kernel(const typename Elem<T>::type* x, int64_t n,
                                                                       bool vectorized, double* partials) {
  using S = typename Elem<T>::type;
  constexpr int kVec = static_cast<int>(16 / sizeof(S));
  double acc = 0.0;
  int64_t scalar_start = 0;
  if (vectorized) {
    const int64_t nvec = n / kVec;
    const auto* xv = reinterpret_cast<const Pack<S, kVec>*>(x);
    for (int64_t i = global_thread(); i < nvec; i += grid_threads()) {
      const Pack<S, kVec> pk = xv[i];
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        const double e = Elem<T>::widen(pk.v[k]);
        acc = __dadd_rn(acc, __dmul_rn(e, e));
      }
    }
    scalar_start = nvec * kVec;
  }
  for (int64_t i = scalar_start + global_thread(); i < n; i += grid_threads()) {
    const double e = Elem<T>::widen(x[i]);
    acc = __dadd_rn(acc, __dmul_rn(e, e));
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

/// Any other float dtype (FP8), element by element through load_as_double.
__global__ __launch_bounds__(kThreads) void sum_squares_generic_kernel(const void* x, DType t, int64_t n,
                                                                       double* partials) {
  double acc = 0.0;
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    const double e = load_as_double(x, i, t);
    acc = __dadd_rn(acc, __dmul_rn(e, e));
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

__global__ __launch_bounds__(kThreads) void sum_partials_kernel(const double* partials, int count, double* out) {
  double acc = 0.0;
  for (int i = threadIdx.x; i < count; i += kThreads) acc = __dadd_rn(acc, partials[i]);
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[0] = acc;
}

/// Every thread that sees an inf or NaN stores 1 (the same value: no atomics needed); nobody stores 0.
__global__ __launch_bounds__(kThreads) void flag_nonfinite_kernel(int32_t* flag, const void* x, DType t, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    if (!isfinite(load_as_double(x, i, t))) *flag = 1;
  }
}

template <DType T>
void launch_sum_squares(const Tensor& x, double* partials, cudaStream_t stream) {
  using S = typename Elem<T>::type;
  const S* p = static_cast<const S*>(x.data_ptr());
  sum_squares_partial_kernel<T><<<kSumBlocks, kThreads, 0, stream>>>(p, x.numel(), aligned16(p), partials);
}

}  // namespace

void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const adamw_math::AdamWScalars& s) {
  const int64_t n = param.numel();
  if (n == 0) return;
  float* p = param.data<float>();
  const float* g = grad.data<float>();
  float* pm = m.data<float>();
  float* pv = v.data<float>();
  const bool vectorized = aligned16(p) && aligned16(g) && aligned16(pm) && aligned16(pv);
  const int64_t work = vectorized ? (n + 3) / 4 : n;
  adamw_kernel<<<grid_for(param, work, kThreads), kThreads, 0, stream_of(param)>>>(p, g, pm, pv, n, vectorized, s);
  COAT_CUDA_CHECK_LAST_LAUNCH();
}

void sum_squares(const Tensor& x, Tensor& out) {
  cudaStream_t stream = stream_of(out);
  Tensor partials = Tensor::empty(out.context(), {kSumBlocks}, DType::F64, MemoryCategory::Workspace);
  double* part = partials.data<double>();
  switch (x.dtype()) {
    case DType::F32:
      launch_sum_squares<DType::F32>(x, part, stream);
      break;
    case DType::F64:
      launch_sum_squares<DType::F64>(x, part, stream);
      break;
    case DType::BF16:
      launch_sum_squares<DType::BF16>(x, part, stream);
      break;
    case DType::F16:
      launch_sum_squares<DType::F16>(x, part, stream);
      break;
    default:
      sum_squares_generic_kernel<<<kSumBlocks, kThreads, 0, stream>>>(x.data_ptr(), x.dtype(), x.numel(), part);
      break;
  }
  COAT_CUDA_CHECK_LAST_LAUNCH();
  sum_partials_kernel<<<1, kThreads, 0, stream>>>(part, kSumBlocks, out.data<double>());
  COAT_CUDA_CHECK_LAST_LAUNCH();
}

void flag_nonfinite(Tensor& flag, const Tensor& x) {
  const int64_t n = x.numel();
  flag_nonfinite_kernel<<<grid_for(x, n, kThreads), kThreads, 0, stream_of(flag)>>>(flag.data<int32_t>(),
                                                                                     x.data_ptr(), x.dtype(), n);
  COAT_CUDA_CHECK_LAST_LAUNCH();
}

}  // namespace coat::cuda
