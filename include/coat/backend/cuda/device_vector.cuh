// Internal to the CUDA kernels (.cu only): 16-byte vector packs, the storage -> arithmetic type mapping
// with BF16 load/store, unfused arithmetic as the CPU twins compute it, and the host-side dtype dispatch.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "coat/backend/typed_dispatch.h"
#include "coat/core/dtype.h"
#include "coat/core/float_ops.h"

namespace coat::cuda {

/// N elements moved as one (16-byte, when N * sizeof(T) == 16) load or store.
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

/// Storage type S (float, double, BF16 bits) -> arithmetic type A, with exact widening and
/// round-to-nearest-even narrowing (BF16 NaNs become 0x7FFF, as the CPU's float_to_bf16).
template <typename S>
struct Elem;
template <>
struct Elem<float> {
  using A = float;
  __device__ static float load(float v) { return v; }
  __device__ static float store(float v) { return v; }
};
template <>
struct Elem<double> {
  using A = double;
  __device__ static double load(double v) { return v; }
  __device__ static double store(double v) { return v; }
};
template <>
struct Elem<uint16_t> {
  using A = float;
  __device__ static float load(uint16_t v) { return __uint_as_float(static_cast<uint32_t>(v) << 16); }
  __device__ static uint16_t store(float v) { return __bfloat16_as_ushort(__float2bfloat16_rn(v)); }
};
template <typename S>
using acc_t = typename Elem<S>::A;

/// Elements of S per 16-byte vector.
template <typename S>
constexpr int kVec16 = static_cast<int>(16 / sizeof(S));

// Unfused arithmetic (no FMA contraction), as the CPU twins compute it: add_rn, sub_rn, mul_rn from
// coat/core/float_ops.h.

/// Whether p may be accessed as 16-byte vectors.
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

/// Calls f with a value of the storage type of dtype t (f32, f64, bf16); "[op] cuda: no kernel ..." else.
template <typename F>
void dispatch_storage(DType t, const char* op, F&& f) {
  coat::dispatch_storage(t, "cuda", op, std::forward<F>(f));
}

}  // namespace coat::cuda
