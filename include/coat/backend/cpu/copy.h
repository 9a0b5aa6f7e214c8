// cpu kernels: strided copy with dtype conversion, and fills (constant, arange, random).
// Callers (coat/ops) validate shapes, dtypes and devices; these functions assume them valid.
#pragma once

#include <cstdint>

#include "coat/core/float_formats.h"
#include "coat/core/tensor.h"

namespace coat::cpu {

/// dst[i] = convert(src[i]) for every element; both strided, same shape, both on this backend.
void copy(const Tensor& src, Tensor& dst, Fp8Saturation sat);
/// Every element of dst (strided) set to value (converted to dst's dtype).
void fill(Tensor& dst, double value);
/// dst[i] = start + i * step in row-major order (dst contiguous).
void arange(Tensor& dst, double start, double step);
/// Counter-based (Philox) random fills of a contiguous float tensor; element i uses counter offset + i.
void fill_uniform(Tensor& dst, uint64_t seed, uint64_t offset, float low, float high);
void fill_normal(Tensor& dst, uint64_t seed, uint64_t offset, float mean, float std);

}  // namespace coat::cpu
