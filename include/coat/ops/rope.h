// Device-agnostic rotary position embedding, HF Llama's rotate-half convention.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "coat/core/tensor.h"

namespace coat::ops {

/// HF's default RoPE inverse frequencies, in double: inv_freq[i] = theta^(-2i/Dh) for i < Dh/2. The
/// scaled variants (models/rope_scaling.h) start from these.
std::vector<double> rope_inverse_frequencies(double theta, int64_t head_dim);

/// x [B, T, H, Dh] (f32, f64 or bf16; Dh even) rotated per head: for i < Dh/2 the pair (i, i + Dh/2)
/// turns by angle = (t + position_offset) * inv_freq[i]:
///   y[i] = x[i] cos - x[i + Dh/2] sin,   y[i + Dh/2] = x[i + Dh/2] cos + x[i] sin.
/// inv_freq holds Dh/2 finite values (the model's RoPE: rope_inverse_frequencies, or a scaled variant).
/// inverse = true turns by -angle: the inverse rotation, which is also the backward (dx = rope(dy, ...,
/// inverse = true)). Angles and their cos/sin are computed in double, then used in float (double for f64).
/// rotary_heads (default: all H): only heads h < rotary_heads turn; heads >= rotary_heads are copied
/// unchanged, bit for bit. A packed projection [B, T, Hq + 2 Hkv, Dh] turns its q and k heads with
/// rotary_heads = Hq + Hkv and keeps its v heads.
Tensor rope(const Tensor& x, std::span<const double> inv_freq, int64_t position_offset = 0,
            bool inverse = false, std::optional<int64_t> rotary_heads = std::nullopt);
/// The default RoPE of base theta: rope(x, rope_inverse_frequencies(theta, Dh), ...), bit for bit.
Tensor rope(const Tensor& x, double theta, int64_t position_offset = 0, bool inverse = false,
            std::optional<int64_t> rotary_heads = std::nullopt);

/// In place: x <- rope(x, inv_freq, position_offset, inverse, rotary_heads); heads >= rotary_heads are not
/// touched. Contiguous x is rotated where it lies (no buffer); any other x goes through a copy.
/// row_max (when not null; f32 and bf16 x): set to F32 [B * T], max |x| of each token's row of H * Dh values
/// after the rotation, as stored (the heads >= rotary_heads included; NaN and inf propagated), written by the
/// same kernel: what ops::quantize_per_tensor_from_row_maxima takes. The backward of a packed q/k/v
/// projection gives the FP8 linear that made it its output gradient's scale this way, without an amax pass.
void rope_(Tensor& x, std::span<const double> inv_freq, int64_t position_offset = 0, bool inverse = false,
           std::optional<int64_t> rotary_heads = std::nullopt, Tensor* row_max = nullptr);
void rope_(Tensor& x, double theta, int64_t position_offset = 0, bool inverse = false,
           std::optional<int64_t> rotary_heads = std::nullopt);

}  // namespace coat::ops
