// cpu kernel: rotary position embedding (HF rotate-half) on a contiguous [B, T, H, Dh] tensor.
// Callers (coat/ops) validate shapes, dtypes and devices; this function assumes them valid.
#pragma once

#include <cstdint>

#include "coat/core/tensor.h"

namespace coat::cpu {

/// y = x rotated by +angle (-angle when inverse), angle = (t + position_offset) * theta^(-2i/Dh); the
/// cos/sin table is computed in double and used in float (double for f64).
void rope(const Tensor& x, double theta, int64_t position_offset, bool inverse, Tensor& y);

}  // namespace coat::cpu
