// Device-agnostic causal softmax attention with grouped KV heads (GQA), and its backward.
#pragma once

#include "coat/core/tensor.h"

namespace coat::ops {

struct AttentionForward {
  Tensor out;  ///< [B, T, Hq, Dh], q's dtype
  Tensor lse;  ///< [B, Hq, T], f32 (f64 for f64 inputs): log-sum-exp of each row of scaled scores
};

/// out = softmax(q k^T * scale + causal mask) v per batch and query head; query head h reads kv head
/// h / (Hq / Hkv). q is [B, T, Hq, Dh], k and v [B, T, Hkv, Dh], one dtype (f32, f64 or bf16); Hq must be
/// a multiple of Hkv. Query t sees keys 0..t. (k and v may also be longer than q, Tk > Tq: then query t
/// sits at position Tk - Tq + t and sees keys 0..Tk - Tq + t, as when a cache holds the earlier keys.)
/// q, k and v may be strided views, e.g. of one packed projection [B, T, Hq + 2 Hkv, Dh]: on CUDA a view
/// with element stride 1, head stride Dh and batch stride T * (token stride) goes to cuDNN as it is
/// (coat/backend/token_strided.h); any other view, and every view on the CPU, goes through a contiguous copy.
AttentionForward attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale);

struct AttentionGrads {
  Tensor dq, dk, dv;  ///< shapes and dtype of q, k, v
};

/// The gradients from dout ([B, T, Hq, Dh]) and the forward's out and lse; the probabilities are
/// recomputed from lse, never stored.
AttentionGrads attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& out, const Tensor& lse, double scale);

/// The same gradients written into dq, dk and dv (shapes and dtype of q, k, v; they must not overlap each
/// other or the inputs). They may be strided views, e.g. of one packed gradient buffer [B, T, Hq + 2 Hkv,
/// Dh]: on CUDA views of the layout described at attention_forward are written directly by cuDNN; otherwise
/// (and on the CPU) the gradients are computed into contiguous buffers and copied in.
void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse, double scale, Tensor& dq, Tensor& dk,
                        Tensor& dv);

}  // namespace coat::ops
