// cpu kernel: fused residual add + FP8 group quantisation (coat/ops/add_quantize.h), the reference of
// backend/cuda/add_quantize.h. The sum is one correctly rounded addition per element (the bytes of ops::add);
// each group is quantised from the sum as stored with the scalar math of coat/backend/quantize_math.h (the
// bytes of quantize_per_group on the sum).
#pragma once

#include <cstdint>

#include "coat/core/float_formats.h"
#include "coat/core/tensor.h"

namespace coat::cpu {

/// sum = a + b; per 1 x group_size group of sum along the last dim: scale = fmt_max / group amax,
/// codes = fp8(sum * scale) (the format is codes' dtype), scale_inv f32 [..., K / group_size] = 1 / scale.
/// a, b and sum f32, bf16 or f16 of one shape, contiguous (checked).
void add_quantize_per_group(const Tensor& a, const Tensor& b, int64_t group_size, Fp8Saturation sat, Tensor& sum,
                            Tensor& codes, Tensor& scale_inv);

}  // namespace coat::cpu
