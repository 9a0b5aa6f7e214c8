// Device-agnostic fused residual add + FP8 group quantisation: a + b and the sum's FP8 copy with one scale per
// 1xG group along the last dimension, from one pass. COAT keeps a norm's input for the backward as such a
// copy (nn/compressed_save.h); when that input is a residual sum, the add makes the copy while the sum is in
// registers instead of the norm reading the sum again.
#pragma once

#include "coat/core/float_formats.h"
#include "coat/core/tensor.h"
#include "coat/ops/quantize.h"

namespace coat::ops {

struct SumAndGroups {
  Tensor sum;           ///< a + b in a's dtype: the bytes of ops::add(a, b)
  Fp8PerGroup groups;   ///< the bytes of ops::quantize_per_group(sum, group_size, fmt, sat)
};

/// a and b of one shape and dtype (f32, bf16 or f16) on one device; group_size divides the last dimension;
/// fmt e4m3 or e5m2. NaN and inf in a group give it a NaN scale, as quantize_per_group does.
SumAndGroups add_quantize_per_group(const Tensor& a, const Tensor& b, int64_t group_size, DType fmt,
                                    Fp8Saturation sat = Fp8Saturation::Saturate);

}  // namespace coat::ops
