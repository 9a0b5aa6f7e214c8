// Internal to the CUDA kernels (.cu only): where a kernel reads an input that COAT may keep compressed (a norm's
// or SwiGLU's saved input): its values in S, or its E4M3 codes with one F32 scale per 16 consecutive elements
// (ops::quantize_per_group(x, 16, E4M3)), restored in registers exactly as dequantize_per_group restores them
// to S. The kernel then needs no separate restore pass (a write and a read of x in S).
#pragma once

#include <cstdint>
#include <type_traits>

#include "coat/backend/cuda/device_vector.cuh"
#include "coat/backend/quantize_math.h"

namespace coat::cuda {

/// Elements per scale of a compressed input.
inline constexpr int kCompressedGroup = 16;

/// Pack `pack` (elements pack * kVec ..) of the input. kVec divides 16 and packs start at multiples of kVec, so
/// a pack never straddles two scale groups; the scale of element e is scale_inv[e / 16] (rows of a multiple of
/// 16 elements, contiguous).
template <typename S, int kVec, bool kCodes>
struct PackSource {
  const S* values;
  const uint8_t* codes;
  const float* scale_inv;
  __device__ __forceinline__ Pack<S, kVec> load(int64_t pack) const {
    if constexpr (!kCodes) {
      return reinterpret_cast<const Pack<S, kVec>*>(values)[pack];
    } else {
      static_assert(kCompressedGroup % kVec == 0, "a pack must lie in one scale group");
      constexpr DType kOut = std::is_same_v<S, float> ? DType::F32 : DType::BF16;
      const Pack<uint8_t, kVec> c = reinterpret_cast<const Pack<uint8_t, kVec>*>(codes)[pack];
      const float si = scale_inv[(pack * kVec) / kCompressedGroup];
      Pack<S, kVec> out;
#pragma unroll
      for (int k = 0; k < kVec; ++k)
        out.v[k] = fp8math::store_float<kOut>(fp8math::dequantize_value<DType::E4M3>(c.v[k], si));
      return out;
    }
  }
};

}  // namespace coat::cuda
