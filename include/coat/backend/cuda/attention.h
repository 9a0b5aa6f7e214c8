// cuda kernels: causal softmax attention with grouped KV heads (GQA), forward and backward, through cuDNN's
// fused scaled-dot-product attention (flash attention) reached with cudnn-frontend. BF16 only (F32 and F64
// throw NotImplemented: cast to BF16 first). Graphs are built once per problem and cached in the context
// (CudaContext::sdpa_plans()); workspace comes from the context's caching allocator (Workspace category).
// Callers (coat/ops) validate shapes, dtypes and devices; these functions check only what cuDNN adds.
#pragma once

#include "coat/core/tensor.h"

namespace coat::cuda {

/// Whether this build has the cuDNN attention (the cudnn-frontend headers were found at build time).
/// Without it both functions below throw NotImplemented.
bool attention_available();

/// q [B, Tq, Hq, Dh], k and v [B, Tk, Hkv, Dh] (Tk >= Tq; query t sees keys 0..Tk - Tq + t), all bf16,
/// token-strided (coat/backend/token_strided.h: contiguous, or views of a packed projection; cuDNN is told
/// the strides, which are part of the plan key) and 16-byte aligned, on one CudaContext. out [B, Tq, Hq, Dh]
/// bf16; lse [B, Hq, Tq] f32: the natural-log log-sum-exp of each row of scaled scores (cuDNN's softmax
/// "stats"), as on the CPU. Dh must be a multiple of 8 and at most 256 (cuDNN on Hopper); otherwise
/// NotImplemented.
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale, Tensor& out,
                       Tensor& lse);

/// dq, dk, dv (shapes of q, k, v; bf16; token-strided like the inputs, e.g. views of one packed gradient
/// buffer, written in place) from dout and the forward's out and lse; dk and dv sum over the
/// query heads that share a kv head. A single key position (Tq = Tk = 1) throws NotImplemented: cuDNN's
/// backward refuses it. cuDNN's default backward accumulates dq with atomics, so its bits
/// may vary from run to run; `deterministic` asks for cuDNN's deterministic algorithm instead (slower, and
/// its workspace holds B * Hq * Tq * Tk bf16 values).
void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse, double scale, Tensor& dq, Tensor& dk,
                        Tensor& dv, bool deterministic = false);

}  // namespace coat::cuda
