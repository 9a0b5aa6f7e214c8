// Device-agnostic rotary position embedding, HF Llama's rotate-half convention.
#pragma once

#include <cstdint>

#include "coat/core/tensor.h"

namespace coat::ops {

/// x [B, T, H, Dh] (f32, f64 or bf16; Dh even) rotated per head: for i < Dh/2 the pair (i, i + Dh/2)
/// turns by angle = (t + position_offset) * theta^(-2i/Dh):
///   y[i] = x[i] cos - x[i + Dh/2] sin,   y[i + Dh/2] = x[i + Dh/2] cos + x[i] sin.
/// inverse = true turns by -angle: the inverse rotation, which is also the backward (dx = rope(dy, ...,
/// inverse = true)). Angles are computed in double.
Tensor rope(const Tensor& x, double theta, int64_t position_offset = 0, bool inverse = false);

}  // namespace coat::ops
