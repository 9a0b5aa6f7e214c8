// Internal to the CUDA kernels (.cu only): where a kernel reads an input that COAT may keep compressed (a norm's
// or SwiGLU's saved input): its values in S, or its E4M3 codes with one F32 scale per 16 consecutive elements
// (ops::quantize_per_group(x, 16, E4M3)), restored in registers exactly as dequantize_per_group restores them
// to S. The kernel then needs no separate restore pass (a write and a read of x in S).
#pragma once

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>
#include <type_traits>

#include "coat/backend/cuda/device_vector.cuh"
#include "coat/backend/quantize_math.h"

namespace coat::cuda {

/// Elements per scale of a compressed input.
inline constexpr int kCompressedGroup = 16;

/// An E4M3 code as a float: on sm_89 and later by the hardware conversion to FP16 (every E4M3 value, subnormals
/// included, is exact in FP16, and so in float; the NaN code stays a NaN, which dequantize_value canonicalises),
/// else by quantize_math.h's bit arithmetic. The same float either way.
__device__ __forceinline__ float decode_e4m3(uint8_t code) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(code), __NV_E4M3)));
#else
  return fp8math::fp8_decode<DType::E4M3>(code);
#endif
}

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
        out.v[k] = fp8math::store_float<kOut>(fp8math::canonicalize_nan(mul_rn(decode_e4m3(c.v[k]), si)));
      return out;
    }
  }
};

}  // namespace coat::cuda
