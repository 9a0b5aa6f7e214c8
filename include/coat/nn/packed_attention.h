// Causal GQA self-attention on a packed q/k/v projection: qkv [B, T, (Hq + 2 Hkv) * Dh], the output of one
// GEMM against [q_proj; k_proj; v_proj], seen as [B, T, Hq + 2 Hkv, Dh] (heads 0..Hq-1 are q, then Hkv k
// heads, then Hkv v heads). One tape node does what rope(q), rope(k) and attention(q, k, v) do:
//   forward:  RoPE turns the q and k heads in place (v heads untouched); q, k and v are strided views of
//             that tensor (token stride (Hq + 2 Hkv) * Dh) that the attention reads as they are (on CUDA;
//             the CPU copies them);
//   backward: dq, dk and dv are written into strided views of ONE buffer dqkv [B, T, Hq + 2 Hkv, Dh], the
//             inverse RoPE turns its q and k heads in place, and dqkv goes back as the gradient of qkv,
//             so that one linear backward (one dgrad and one wgrad GEMM) follows; on request that kernel
//             also writes dqkv's row maxima for that linear's FP8 scale.
// Saves the rotated qkv, the output and the per-row log-sum-exp: the bytes of q, k, v, out and lse; on
// request (AttentionCompression) the rotated qkv and/or the output as FP8 E4M3 with 1x16 group scales
// (nn/compressed_save.h, 1.25 bytes per element), restored to their dtype for the backward
// (precision.compress_attention). Compressed q, k and v are restored before the forward too: the forward and
// the backward see the same values (the backward's softmax, recomputed from q k^T and the forward's lse, is
// then the forward's).
#pragma once

#include <cstdint>
#include <vector>

#include "coat/autograd/tape.h"
#include "coat/nn/grad_row_maxima.h"
#include "coat/nn/output_remake.h"

namespace coat::nn {

/// Which of attention's saved tensors are kept compressed (where nn::compresses_input agrees). The output
/// only pays when nothing else keeps it as it is: the o projection that reads it must keep its own copy
/// (an FP8 linear's transposed input), else both would be alive.
struct AttentionCompression {
  bool qkv = false;  ///< the rotated q, k and v
  bool out = false;  ///< the output
};

/// Returns the attention output [B, T, Hq * Dh] (softmax(q k^T * scale + causal mask) v with RoPE of
/// inverse frequencies `inv_freq` (Dh/2 values, ops::rope) at positions 0..T-1 on q and k). qkv.value is
/// rotated IN PLACE (its q and k heads): pass a tensor nothing else reads afterwards, such as the packed
/// projection's output (a linear saves its input, not its output); it is what this node saves.
/// dqkv_maxima (when not null; f32 and bf16): the backward puts the row maxima of dqkv (one per token, over
/// its q, k and v heads) there, written by the inverse RoPE's kernel, for the FP8 linear that made qkv
/// (nn::linear_fp8 `dy_maxima`).
/// remake_qkv (when set: train.recompute = qkv): how the linear that made qkv makes it again
/// (nn/output_remake.h). The node then keeps remake_qkv.inputs instead of the rotated qkv, and its backward
/// makes qkv again and rotates it as the forward did: the forward's bytes. compress.qkv must then be off.
autograd::Var packed_attention(autograd::Tape& tape, const autograd::Var& qkv, int64_t hq, int64_t hkv,
                               int64_t dh, std::vector<double> inv_freq, double scale,
                               GradRowMaximaSlot dqkv_maxima = nullptr, AttentionCompression compress = {},
                               OutputRemake remake_qkv = {});
/// The same with the default RoPE of base theta (inv_freq = ops::rope_inverse_frequencies(theta, dh)).
autograd::Var packed_attention(autograd::Tape& tape, const autograd::Var& qkv, int64_t hq, int64_t hkv,
                               int64_t dh, double theta, double scale);

}  // namespace coat::nn
