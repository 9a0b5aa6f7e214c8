// cpu kernels: causal softmax attention with grouped KV heads, one (batch, query head, query row) at a
// time with a score buffer: O(Tq * Tk * Dh) per head. Work is split over (batch, kv head) pairs across
// std::threads; each pair is computed sequentially, so results do not depend on the thread count.
// Callers (coat/ops) validate shapes, dtypes and devices; these functions assume them valid.
#pragma once

#include "coat/core/tensor.h"

namespace coat::cpu {

/// q [B, Tq, Hq, Dh], k and v [B, Tk, Hkv, Dh] (Tk >= Tq; query t sees keys 0..Tk - Tq + t), all contiguous
/// of one dtype. out [B, Tq, Hq, Dh] in that dtype, lse [B, Hq, Tq] f32 (f64 for f64).
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale, Tensor& out,
                       Tensor& lse);
/// dq, dk, dv (shapes and dtype of q, k, v) from dout and the forward's out and lse.
void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse, double scale, Tensor& dq, Tensor& dk,
                        Tensor& dv);

}  // namespace coat::cpu
