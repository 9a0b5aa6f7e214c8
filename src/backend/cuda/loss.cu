// CUDA kernels of the softmax cross-entropy fused with the logits' gradient: one block per row, two passes
// over the row (online max + sum of exponentials, then the gradient), per-row losses summed in a fixed
// order in double by one block. Nothing of vocabulary size is kept besides logits and dlogits; rows of
// 8-96 KB are kept in shared memory between the passes, so the logits are read from memory once.
//
// Against the CPU reference (backend/cpu/loss.cpp), which computes e_j = exp(x_j - max) in float, sums them
// in double and forms the gradient as (e_j * inv) * g with inv = float(1 / sum), g = float(grad_scale):
// the max is exact; the device's expf differs from glibc's by at most 2 ulp; the sum is formed online:
// each thread keeps a running max, adds the exponentials of one 16-byte vector pairwise in float, then in
// double, rescaling its sum by exp(m_old - m_new) in double when its max grows; the block takes the max,
// rescales each thread's sum once by exp(m - max) in double and adds the sums in a fixed tree. So the sum
// differs from the CPU's by a relative ~1e-7. The gradient products are spelled __fmul_rn/__fsub_rn, the
// CPU's order without FMA contraction; bf16 is rounded by the hardware conversion (round to nearest even,
// like float_to_bf16). So: loss per row within ~1e-6 absolute, f32 dlogits within a relative few 1e-7,
// bf16 dlogits within one bf16 ulp; f64 logits run in double throughout (~1e-15).
//
// Nothing here synchronises the host, by construction: no cudaMemcpy, no cudaStreamSynchronize, no
// read-back of any kind; the sums, the count and the first bad target stay in an ops::CrossEntropySums on
// the device (ops::CrossEntropyResult::read reads them when the caller wants them).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/launch.h"
#include "coat/backend/cuda/loss.h"
#include "coat/core/float_formats.h"
#include "coat/core/float_ops.h"
#include "coat/ops/loss.h"

namespace coat::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFullMask = 0xffffffffu;
/// CrossEntropySums::bad_position before any bad row is seen: all bits set, -1 as a signed word, so that
/// an unsigned atomicMin lowers it to the first bad row.
constexpr unsigned long long kNoBadPosition = ~0ull;

using CeStatus = ops::CrossEntropySums;

__device__ inline unsigned long long* bad_position_word(CeStatus* status) {
  return reinterpret_cast<unsigned long long*>(&status->bad_position);
}

template <typename S, int N>
struct alignas(sizeof(S) * N) Pack {
  S v[N];
};

/// The CPU's storage -> arithmetic types: float and bf16 compute in float, f64 in double.
template <typename S>
struct Arith {
  using type = float;
};
template <>
struct Arith<double> {
  using type = double;
};

__device__ inline float widen(float v) { return v; }
__device__ inline double widen(double v) { return v; }
__device__ inline float widen(uint16_t v) { return bf16_to_float(v); }

template <typename S>
__device__ inline S narrow(typename Arith<S>::type v) {
  if constexpr (sizeof(S) == 2) {
    return float_to_bf16(v);
  } else {
    return v;
  }
}

__device__ inline float exp_acc(float x) { return expf(x); }
__device__ inline double exp_acc(double x) { return exp(x); }

/// The block's (max, sum): the max over the block (exact in any order), each thread's sum rescaled once
/// by exp(m - max) in double, then the sums added in a fixed tree (identical bits run to run). Valid in
/// every thread.
template <int Threads, typename A>
__device__ void block_merge(A& m, double& s) {
  constexpr int kBlockWarps = Threads / 32;
  __shared__ A warp_m[kBlockWarps];
  __shared__ double warp_s[kBlockWarps];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  A big = m;
  for (int offset = 16; offset > 0; offset >>= 1) {
    const A other = __shfl_xor_sync(kFullMask, big, offset);
    big = other > big ? other : big;
  }
  if (lane == 0) warp_m[warp] = big;
  __syncthreads();
  big = warp_m[0];
  for (int w = 1; w < kBlockWarps; ++w) big = warp_m[w] > big ? warp_m[w] : big;
  if (m != big) s = m == -INFINITY ? 0.0 : s * exp(static_cast<double>(m) - static_cast<double>(big));
  for (int offset = 16; offset > 0; offset >>= 1) s += __shfl_down_sync(kFullMask, s, offset);
  if (lane == 0) warp_s[warp] = s;
  __syncthreads();
  s = warp_s[0];
  for (int w = 1; w < kBlockWarps; ++w) s += warp_s[w];
  m = big;
  __syncthreads();  // warp_m / warp_s are reused by the next row
}

/// Pass 1 on one vector: the running max m grows to cover it (s rescaled in double), then the vector's
/// exponentials are summed pairwise in A and added to s in double.
template <typename S, int Vec>
__device__ inline void accumulate_vector(const Pack<S, Vec>& pk, typename Arith<S>::type& m, double& s) {
  using A = typename Arith<S>::type;
  A x[Vec];
  A local = x[0] = widen(pk.v[0]);
#pragma unroll
  for (int k = 1; k < Vec; ++k) {
    x[k] = widen(pk.v[k]);
    local = x[k] > local ? x[k] : local;
  }
  if (local > m) {
    s = m == -INFINITY ? 0.0 : s * exp(static_cast<double>(m) - static_cast<double>(local));
    m = local;
  }
#pragma unroll
  for (int k = 0; k < Vec; ++k) x[k] = exp_acc(sub_rn(x[k], m));
#pragma unroll
  for (int width = 1; width < Vec; width *= 2) {
#pragma unroll
    for (int k = 0; k + width < Vec; k += 2 * width) x[k] = x[k] + x[k + width];
  }
  s += static_cast<double>(x[0]);
}

/// v rounded to S: bf16 through the hardware conversion (round to nearest even, as float_to_bf16; NaN
/// still mapped to its canonical 0x7FFF), two at a time.
template <typename S, int Vec>
__device__ inline void narrow_vector(const typename Arith<S>::type (&v)[Vec], Pack<S, Vec>& out) {
  if constexpr (sizeof(S) == 2 && Vec % 2 == 0) {
#pragma unroll
    for (int k = 0; k < Vec; k += 2) {
      const __nv_bfloat162 h = __floats2bfloat162_rn(v[k], v[k + 1]);
      out.v[k] = v[k] != v[k] ? uint16_t{0x7FFF} : __bfloat16_as_ushort(h.x);
      out.v[k + 1] = v[k + 1] != v[k + 1] ? uint16_t{0x7FFF} : __bfloat16_as_ushort(h.y);
    }
  } else {
#pragma unroll
    for (int k = 0; k < Vec; ++k) out.v[k] = narrow<S>(v[k]);
  }
}

/// One block per row (grid-stride), Threads threads. Vec elements per access (V % Vec == 0 and 16-byte
/// aligned rows when Vec > 1). With Cache, pass 1 keeps the row in dynamic shared memory (V * sizeof(S)
/// bytes) and pass 2 reads it from there instead of memory: each thread re-reads only what it wrote, so no
/// barrier is needed. row_loss[r] = max + log(sum) - x[target] (0 for ignored or bad rows); a bad target
/// lowers status->bad_position to r and its row is skipped.
template <typename S, typename I, int Vec, int Threads, bool Cache>
__global__ __launch_bounds__(Threads) void cross_entropy_rows_kernel(const S* __restrict__ logits,
                                                                     const I* __restrict__ targets, int64_t rows,
                                                                     int64_t vocab, int64_t ignore_index,
                                                                     double grad_scale, S* __restrict__ dlogits,
                                                                     double* __restrict__ row_loss,
                                                                     CeStatus* status) {
  using A = typename Arith<S>::type;
  using P = Pack<S, Vec>;
  extern __shared__ __align__(16) unsigned char cache_bytes[];
  P* cache = reinterpret_cast<P*>(cache_bytes);
  const int64_t nvec = vocab / Vec;
  // The next row's target is loaded one row ahead.
  int64_t next_target = blockIdx.x < rows ? static_cast<int64_t>(targets[blockIdx.x]) : 0;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t t = next_target;
    if (r + gridDim.x < rows) next_target = static_cast<int64_t>(targets[r + gridDim.x]);
    P* drow = dlogits == nullptr ? nullptr : reinterpret_cast<P*>(dlogits + r * vocab);
    if (t == ignore_index || t < 0 || t >= vocab) {
      if (threadIdx.x == 0) {
        row_loss[r] = 0.0;
        if (t != ignore_index) atomicMin(bad_position_word(status), static_cast<unsigned long long>(r));
      }
      if (drow != nullptr && t == ignore_index) {
        P zero;
#pragma unroll
        for (int k = 0; k < Vec; ++k) zero.v[k] = narrow<S>(A(0));
        for (int64_t i = threadIdx.x; i < nvec; i += Threads) drow[i] = zero;
      }
      continue;
    }
    const P* xrow = reinterpret_cast<const P*>(logits + r * vocab);
    const A target_logit = threadIdx.x == 0 ? widen(logits[r * vocab + t]) : A(0);  // in flight during pass 1
    // Pass 1: running max and sum of exp(x - max) per thread; two loads in flight.
    A m = -INFINITY;
    double s = 0.0;
    int64_t i = threadIdx.x;
    for (; i + Threads < nvec; i += 2 * Threads) {
      const P a = xrow[i];
      const P b = xrow[i + Threads];
      if constexpr (Cache) {
        cache[i] = a;
        cache[i + Threads] = b;
      }
      accumulate_vector(a, m, s);
      accumulate_vector(b, m, s);
    }
    if (i < nvec) {
      const P a = xrow[i];
      if constexpr (Cache) cache[i] = a;
      accumulate_vector(a, m, s);
    }
    block_merge<Threads>(m, s);
    if (threadIdx.x == 0) {
      row_loss[r] = static_cast<double>(m) + log(s) - static_cast<double>(target_logit);
    }
    if (drow == nullptr) continue;
    // Pass 2: (softmax - onehot) * grad_scale, the CPU's products in the CPU's order.
    const A inv = static_cast<A>(1.0 / s);
    const A g = static_cast<A>(grad_scale);
    const int64_t tvec = t / Vec;
    const int tk = static_cast<int>(t - tvec * Vec);
    for (int64_t j = threadIdx.x; j < nvec; j += Threads) {
      const P pk = Cache ? cache[j] : xrow[j];
      A d[Vec];
#pragma unroll
      for (int k = 0; k < Vec; ++k) d[k] = mul_rn(mul_rn(exp_acc(sub_rn(widen(pk.v[k]), m)), inv), g);
      if (j == tvec) {
#pragma unroll
        for (int k = 0; k < Vec; ++k) {
          if (k == tk) d[k] = mul_rn(sub_rn(mul_rn(exp_acc(sub_rn(widen(pk.v[k]), m)), inv), A(1)), g);
        }
      }
      P out;
      narrow_vector<S, Vec>(d, out);
      drow[j] = out;
    }
  }
}

template <typename T>
__device__ T block_sum(T x) {
  __shared__ T warp_sums[kWarps];
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_down_sync(kFullMask, x, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = x;
  __syncthreads();
  x = warp_sums[0];
  for (int w = 1; w < kWarps; ++w) x += warp_sums[w];
  return x;
}

/// One block, after the rows kernel on the same stream: the per-row losses summed in a fixed order, the
/// counted rows, the bad rows and the first bad row's target.
template <typename I>
__global__ __launch_bounds__(kThreads) void sum_rows_kernel(const double* __restrict__ row_loss,
                                                            const I* __restrict__ targets, int64_t rows,
                                                            int64_t vocab, int64_t ignore_index, CeStatus* status) {
  double loss = 0.0;
  long long count = 0, bad = 0;
  for (int64_t r = threadIdx.x; r < rows; r += kThreads) {
    const int64_t t = static_cast<int64_t>(targets[r]);
    loss += row_loss[r];
    count += t != ignore_index ? 1 : 0;
    bad += t != ignore_index && (t < 0 || t >= vocab) ? 1 : 0;
  }
  loss = block_sum(loss);
  count = block_sum(count);
  __syncthreads();  // block_sum<long long>'s shared words are read by every thread before they are reused
  bad = block_sum(bad);
  if (threadIdx.x == 0) {
    status->loss_sum = loss;
    status->count = static_cast<double>(count);
    status->bad_rows = static_cast<double>(bad);
    const unsigned long long position = *bad_position_word(status);
    status->bad_target = position == kNoBadPosition ? 0 : static_cast<int64_t>(targets[position]);
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

/// Rows of at most this many bytes are kept in shared memory between the two passes (two or more blocks
/// of kCacheThreads per multiprocessor); longer rows are read twice.
constexpr int64_t kMaxCachedRowBytes = 96 * 1024;
/// Rows shorter than this are not worth a large block.
constexpr int64_t kMinCachedRowBytes = 8 * 1024;
constexpr int kCacheThreads = 512;

template <typename S, typename I, int Vec, int Threads, bool Cache>
void launch_rows_kernel(const S* x, const I* targets, int64_t rows, int64_t vocab, int64_t ignore_index,
                        double grad_scale, S* dx, double* row_loss, CeStatus* status, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(rows, int64_t{1} << 20));
  auto kernel = cross_entropy_rows_kernel<S, I, Vec, Threads, Cache>;
  const size_t smem = Cache ? static_cast<size_t>(vocab) * sizeof(S) : 0;
  if (Cache) {
    COAT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  kernel<<<blocks, Threads, smem, stream>>>(x, targets, rows, vocab, ignore_index, grad_scale, dx, row_loss, status);
  COAT_CUDA_CHECK_LAST_LAUNCH();
}

/// The block size depends on the row length only (so loss_sum has the same bits with or without the
/// gradient); the row is cached in shared memory when the gradient pass will re-read it.
template <typename S, typename I, int Vec>
void launch_rows_vec(const S* x, const I* targets, int64_t rows, int64_t vocab, int64_t ignore_index,
                     double grad_scale, S* dx, double* row_loss, CeStatus* status, cudaStream_t stream) {
  const int64_t row_bytes = vocab * static_cast<int64_t>(sizeof(S));
  if (row_bytes < kMinCachedRowBytes || row_bytes > kMaxCachedRowBytes) {
    launch_rows_kernel<S, I, Vec, kThreads, false>(x, targets, rows, vocab, ignore_index, grad_scale, dx, row_loss,
                                                   status, stream);
  } else if (dx != nullptr) {
    launch_rows_kernel<S, I, Vec, kCacheThreads, true>(x, targets, rows, vocab, ignore_index, grad_scale, dx,
                                                       row_loss, status, stream);
  } else {
    launch_rows_kernel<S, I, Vec, kCacheThreads, false>(x, targets, rows, vocab, ignore_index, grad_scale, dx,
                                                        row_loss, status, stream);
  }
}

template <typename S, typename I>
void launch_rows(const Tensor& logits, const I* targets, int64_t rows, int64_t vocab, int64_t ignore_index,
                 double grad_scale, Tensor& dlogits, double* row_loss, CeStatus* status, cudaStream_t stream) {
  constexpr int kVec = static_cast<int>(16 / sizeof(S));
  const S* x = static_cast<const S*>(logits.data_ptr());
  S* dx = dlogits.defined() ? static_cast<S*>(dlogits.data_ptr()) : nullptr;
  const bool vectorized = vocab % kVec == 0 && aligned16(x) && (dx == nullptr || aligned16(dx));
  if (vectorized) {
    launch_rows_vec<S, I, kVec>(x, targets, rows, vocab, ignore_index, grad_scale, dx, row_loss, status, stream);
  } else {
    launch_rows_vec<S, I, 1>(x, targets, rows, vocab, ignore_index, grad_scale, dx, row_loss, status, stream);
  }
}

}  // namespace

void cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, double grad_scale,
                   Tensor& dlogits, Tensor& sums) {
  const int64_t vocab = logits.size(-1);
  const int64_t rows = targets.numel();
  const ContextPtr& ctx = logits.context();
  cudaStream_t stream = stream_of(logits);
  Tensor row_loss = Tensor::empty(ctx, {std::max<int64_t>(rows, 1)}, DType::F64, MemoryCategory::Workspace);
  auto* status = static_cast<CeStatus*>(sums.data_ptr());
  COAT_CUDA_CHECK(cudaMemsetAsync(&status->bad_position, 0xFF, sizeof status->bad_position, stream));
  auto run = [&](auto id_type) {
    using I = decltype(id_type);
    const I* t = targets.data<I>();
    double* rl = row_loss.data<double>();
    if (rows > 0) {
      switch (logits.dtype()) {
        case DType::F32:
          launch_rows<float>(logits, t, rows, vocab, ignore_index, grad_scale, dlogits, rl, status, stream);
          break;
        case DType::F64:
          launch_rows<double>(logits, t, rows, vocab, ignore_index, grad_scale, dlogits, rl, status, stream);
          break;
        case DType::BF16:
          launch_rows<uint16_t>(logits, t, rows, vocab, ignore_index, grad_scale, dlogits, rl, status, stream);
          break;
        default:
          COAT_CHECK(false, NotImplemented, "[cross_entropy] cuda: no kernel for logits of dtype ",
                     dtype_name(logits.dtype()));
      }
    }
    // Also for zero rows: it writes the zero sums.
    sum_rows_kernel<I><<<1, kThreads, 0, stream>>>(rl, t, rows, vocab, ignore_index, status);
    COAT_CUDA_CHECK_LAST_LAUNCH();
  };
  if (targets.dtype() == DType::I64) {
    run(int64_t{});
  } else if (targets.dtype() == DType::I32) {
    run(int32_t{});
  } else {
    COAT_CHECK(false, NotImplemented, "[cross_entropy] cuda: no kernel for targets of dtype ",
               dtype_name(targets.dtype()));
  }
}

}  // namespace coat::cuda
