// CUDA kernel of the fused residual add + FP8 group quantisation, then its launcher. Memory-bound: each group
// is handled by a team of lanes (group_team.cuh, the loop of quantize_per_group) with 16-byte vectors where
// alignment allows; longer groups re-read the sums the lane itself stored. Every value goes through the scalar math of
// quantize_math.h, as in the CPU reference, so sums, codes and scales are byte-identical to it.
#include <cuda_runtime.h>

#include <cstdint>

#include "coat/backend/cuda/add_quantize.h"
#include "coat/backend/cuda/check.h"
#include "coat/backend/cuda/device_vector.cuh"
#include "coat/backend/cuda/launch.h"
#include "coat/backend/quantize_math.h"
#include "group_team.cuh"

namespace coat::cuda {
namespace {

using namespace coat::fp8math;

constexpr int kThreads = 256;

/// sum = a + b of one vector, rounded once to T (add_rn, as the CPU reference).
template <DType T, int Vec>
__device__ inline Pack<storage_t<T>, Vec> add_vector(const Pack<storage_t<T>, Vec>& a,
                                                     const Pack<storage_t<T>, Vec>& b) {
  Pack<storage_t<T>, Vec> s;
#pragma unroll
  for (int v = 0; v < Vec; ++v) s.v[v] = store_float<T>(add_rn(load_float<T>(a.v[v]), load_float<T>(b.v[v])));
  return s;
}

/// A team of lanes per group (group_team.cuh): the sums are stored (and cached) on their first read, the
/// vectors beyond a lane's cache are read back from the sums the lane itself stored.
template <DType T, DType Fmt, int Vec>
__global__ __launch_bounds__(kThreads) void add_quantize_group_kernel(const storage_t<T>* __restrict__ a,
                                                                      const storage_t<T>* __restrict__ b,
                                                                      storage_t<T>* sum, int64_t num_groups,
                                                                      int64_t group_size, int team,
                                                                      Fp8Saturation sat, uint8_t* __restrict__ codes,
                                                                      float* __restrict__ scale_inv) {
  using P = Pack<storage_t<T>, Vec>;
  const auto first = [=](int64_t offset, int64_t j) {
    const P s = add_vector<T, Vec>(reinterpret_cast<const P*>(a + offset)[j], reinterpret_cast<const P*>(b + offset)[j]);
    reinterpret_cast<P*>(sum + offset)[j] = s;
    return s;
  };
  const auto again = [=](int64_t offset, int64_t j) { return reinterpret_cast<const P*>(sum + offset)[j]; };
  group_team::quantize_groups<T, Vec, /*kQuantize=*/true, Fmt, P, Pack<uint8_t, Vec>>(num_groups, group_size, team, sat,
                                                                                    codes, scale_inv, first, again);
}

bool aligned_to(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

}  // namespace

void add_quantize_per_group(const Tensor& a, const Tensor& b, int64_t group_size, Fp8Saturation sat, Tensor& sum,
                            Tensor& codes, Tensor& scale_inv) {
  constexpr const char* op = "add_quantize_per_group";
  check_add_quantize_per_group(a, b, group_size, sum, codes, scale_inv, a.device());
  COAT_ARG_CHECK(a.device().is_cuda(), op, "input ", a.str(), " is not on a CUDA device");
  const int64_t groups = a.numel() / group_size;
  if (groups == 0) return;
  cudaStream_t stream = stream_of(sum);
  dispatch_float_dtype(a.dtype(), op, [&](auto t) {
    constexpr DType T = decltype(t)::value;
    using S = storage_t<T>;
    constexpr int kVec = static_cast<int>(16 / sizeof(S));
    const bool vectorized = group_size % kVec == 0 && aligned_to(a.data_ptr(), 16) &&
                            aligned_to(b.data_ptr(), 16) && aligned_to(sum.data_ptr(), 16) &&
                            aligned_to(codes.data_ptr(), kVec);
    const int vec = vectorized ? kVec : 1;
    const int team = group_team::team_size(group_size / vec);
    const int64_t threads = group_team::threads_for(groups, team);
    const unsigned blocks = grid_for(sum, threads, kThreads);
    const S* ap = static_cast<const S*>(a.data_ptr());
    const S* bp = static_cast<const S*>(b.data_ptr());
    S* sp = static_cast<S*>(sum.data_ptr());
    uint8_t* cp = static_cast<uint8_t*>(codes.data_ptr());
    float* sip = scale_inv.data<float>();
    dispatch_fp8_format(codes.dtype(), op, [&](auto f) {
      constexpr DType Fmt = decltype(f)::value;
      if (vectorized) {
        add_quantize_group_kernel<T, Fmt, kVec>
            <<<blocks, kThreads, 0, stream>>>(ap, bp, sp, groups, group_size, team, sat, cp, sip);
      } else {
        add_quantize_group_kernel<T, Fmt, 1>
            <<<blocks, kThreads, 0, stream>>>(ap, bp, sp, groups, group_size, team, sat, cp, sip);
      }
      COAT_CUDA_CHECK_LAST_LAUNCH();
    });
  });
}

}  // namespace coat::cuda
