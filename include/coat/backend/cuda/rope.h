// cuda kernel: rotary position embedding (HF rotate-half) on a contiguous [B, T, H, Dh] tensor.
// Callers (coat/ops) validate shapes, dtypes and devices; this function assumes them valid.
#pragma once

#include <cstdint>
#include <span>

#include "coat/core/tensor.h"

namespace coat::cuda {

/// y = x rotated by +angle (-angle when inverse), angle = (t + position_offset) * inv_freq[i], for heads
/// h < rotary_heads; heads >= rotary_heads are copied unchanged (one strided cudaMemcpy2DAsync). As on the
/// CPU, the angles and their cos/sin are computed in double (on the device, once per block and position,
/// from the host's inv_freq) and used in float (double for f64); the rotation itself is the CPU's float
/// arithmetic, unfused. y may be x itself (in place: the other heads are then not touched). Dh <= 512
/// (NotImplemented otherwise).
void rope(const Tensor& x, std::span<const double> inv_freq, int64_t position_offset, bool inverse,
          int64_t rotary_heads, Tensor& y, Tensor* row_max = nullptr);

}  // namespace coat::cuda
