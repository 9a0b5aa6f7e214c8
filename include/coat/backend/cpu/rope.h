// cpu kernel: rotary position embedding (HF rotate-half) on a contiguous [B, T, H, Dh] tensor.
// Callers (coat/ops) validate shapes, dtypes and devices; this function assumes them valid.
#pragma once

#include <cstdint>
#include <span>

#include "coat/core/tensor.h"

namespace coat::cpu {

/// y = x rotated by +angle (-angle when inverse), angle = (t + position_offset) * inv_freq[i], for heads
/// h < rotary_heads; heads >= rotary_heads are copied unchanged. The cos/sin table is computed in double and
/// used in float (double for f64). y may be x itself (in place: the other heads are then not touched).
void rope(const Tensor& x, std::span<const double> inv_freq, int64_t position_offset, bool inverse,
          int64_t rotary_heads, Tensor& y, Tensor* row_max = nullptr);

}  // namespace coat::cpu
