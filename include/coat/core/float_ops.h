// Scalar float operations written once for host and device code that must agree to the bit: bit casts,
// + - * / sqrt and fma each rounded once to nearest even, and floor. On the device they are the explicit _rn
// intrinsics, so neither FMA contraction nor nvcc flags such as -prec-div=false change them; on the host they
// are the plain IEEE operations and std::fma (the project compiles with -ffp-contract=off and without
// fast-math).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "coat/core/host_device.h"

namespace coat {

COAT_HOST_DEVICE inline uint32_t float_to_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return bits;
#endif
}

COAT_HOST_DEVICE inline float bits_to_float(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float x;
  std::memcpy(&x, &bits, sizeof(x));
  return x;
#endif
}

#if defined(__CUDA_ARCH__)
#define COAT_RN_OP(name, op, f_intrinsic, d_intrinsic)                                           \
  COAT_HOST_DEVICE inline float name(float a, float b) { return f_intrinsic(a, b); }            \
  COAT_HOST_DEVICE inline double name(double a, double b) { return d_intrinsic(a, b); }
#else
#define COAT_RN_OP(name, op, f_intrinsic, d_intrinsic)                     \
  COAT_HOST_DEVICE inline float name(float a, float b) { return a op b; } \
  COAT_HOST_DEVICE inline double name(double a, double b) { return a op b; }
#endif
COAT_RN_OP(add_rn, +, __fadd_rn, __dadd_rn)
COAT_RN_OP(sub_rn, -, __fsub_rn, __dsub_rn)
COAT_RN_OP(mul_rn, *, __fmul_rn, __dmul_rn)
COAT_RN_OP(div_rn, /, __fdiv_rn, __ddiv_rn)
#undef COAT_RN_OP

/// 1 / a rounded once: the same bits as div_rn(1.0f, a) (both IEEE round-to-nearest); on the GPU the reciprocal
/// intrinsic, fewer instructions than a general division.
COAT_HOST_DEVICE inline float rcp_rn(float a) {
#if defined(__CUDA_ARCH__)
  return __frcp_rn(a);
#else
  return 1.0f / a;
#endif
}

COAT_HOST_DEVICE inline float sqrt_rn(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}
COAT_HOST_DEVICE inline double sqrt_rn(double a) {
#if defined(__CUDA_ARCH__)
  return __dsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}

/// a * b + c rounded once (IEEE fusedMultiplyAdd): identical on host and device.
COAT_HOST_DEVICE inline float fma_rn(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

/// Rounds down to an integer (exact on both sides).
COAT_HOST_DEVICE inline float floor_exact(float x) {
#if defined(__CUDA_ARCH__)
  return floorf(x);
#else
  return std::floor(x);
#endif
}

}  // namespace coat
