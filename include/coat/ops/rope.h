// Device-agnostic rotary position embedding, HF Llama's rotate-half convention.
#pragma once

#include <cstdint>
#include <optional>

#include "coat/core/tensor.h"

namespace coat::ops {

/// x [B, T, H, Dh] (f32, f64 or bf16; Dh even) rotated per head: for i < Dh/2 the pair (i, i + Dh/2)
/// turns by angle = (t + position_offset) * theta^(-2i/Dh):
///   y[i] = x[i] cos - x[i + Dh/2] sin,   y[i + Dh/2] = x[i + Dh/2] cos + x[i] sin.
/// inverse = true turns by -angle: the inverse rotation, which is also the backward (dx = rope(dy, ...,
/// inverse = true)). Angles are computed in double.
/// rotary_heads (default: all H): only heads h < rotary_heads turn; heads >= rotary_heads are copied
/// unchanged, bit for bit. A packed projection [B, T, Hq + 2 Hkv, Dh] turns its q and k heads with
/// rotary_heads = Hq + Hkv and keeps its v heads.
Tensor rope(const Tensor& x, double theta, int64_t position_offset = 0, bool inverse = false,
            std::optional<int64_t> rotary_heads = std::nullopt);

/// In place: x <- rope(x, theta, position_offset, inverse, rotary_heads); heads >= rotary_heads are not
/// touched. Contiguous x is rotated where it lies (no buffer); any other x goes through a copy.
void rope_(Tensor& x, double theta, int64_t position_offset = 0, bool inverse = false,
           std::optional<int64_t> rotary_heads = std::nullopt);

}  // namespace coat::ops
