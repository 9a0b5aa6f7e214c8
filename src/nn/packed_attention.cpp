#include "coat/nn/packed_attention.h"

#include <utility>

#include "coat/core/nvtx.h"
#include "coat/nn/compressed_save.h"
#include "coat/ops/attention.h"
#include "coat/ops/copy.h"
#include "coat/ops/rope.h"

namespace coat::nn {

namespace {

/// The q, k and v heads of a packed [B, T, Hq + 2 Hkv, Dh] tensor as views (no copies).
struct HeadViews {
  Tensor q, k, v;
};

HeadViews split_heads(const Tensor& packed, int64_t hq, int64_t hkv) {
  return {packed.slice(2, 0, hq), packed.slice(2, hq, hq + hkv), packed.slice(2, hq + hkv, hq + 2 * hkv)};
}

}  // namespace

autograd::Var packed_attention(autograd::Tape& tape, const autograd::Var& qkv, int64_t hq, int64_t hkv,
                               int64_t dh, std::vector<double> freq, double scale,
                               GradRowMaximaSlot dqkv_maxima, AttentionCompression compress, OutputRemake remake_qkv) {
  const NvtxRange range("packed_attention");
  const Shape& shape = qkv.shape();
  COAT_ARG_CHECK(hq > 0 && hkv > 0 && dh > 0 && hq % hkv == 0, "packed_attention", "heads hq = ", hq,
                 ", hkv = ", hkv, " and head dimension ", dh, " must be positive with hq a multiple of hkv");
  COAT_ARG_CHECK(shape.size() == 3 && shape[2] == (hq + 2 * hkv) * dh, "packed_attention", "qkv has shape ",
                 shape_str(shape), "; expected [B, T, (hq + 2 hkv) * dh] = [B, T, ", (hq + 2 * hkv) * dh,
                 "]");
  COAT_ARG_CHECK(qkv.value.is_contiguous(), "packed_attention", "qkv ", shape_str(shape),
                 " must be contiguous");
  COAT_ARG_CHECK(!(remake_qkv && compress.qkv), "packed_attention",
                 "q, k and v are either made again in the backward or kept compressed, not both");
  const int64_t batch = shape[0], seq = shape[1];
  const Shape heads_shape{batch, seq, hq + 2 * hkv, dh};
  Tensor packed = qkv.value.reshape(heads_shape);
  ops::rope_(packed, freq, /*position_offset=*/0, /*inverse=*/false, /*rotary_heads=*/hq + hkv);
  // Saved: the rotated qkv (as it is or compressed; or what makes it again), the output (as it is or compressed)
  // and lse. Compressed, q, k and v enter the forward as the backward will restore them, so that the
  // backward's probabilities (recomputed from q k^T and the forward's lse) are those of the forward.
  std::vector<Tensor> kept_qkv, kept_out;
  const bool remade = static_cast<bool>(remake_qkv);
  SavedInput qkv_kept;
  if (remade) {
    kept_qkv = std::move(remake_qkv.inputs);
  } else {
    qkv_kept = save_input(tape, packed, compress.qkv, kept_qkv);
    if (qkv_kept.compressed) ops::copy_(packed, qkv_kept.restore(kept_qkv));
  }
  const HeadViews in = split_heads(packed, hq, hkv);
  ops::AttentionForward f = ops::attention_forward(in.q, in.k, in.v, scale);
  Tensor out = f.out.reshape({batch, seq, hq * dh});
  const SavedInput out_kept = save_input(tape, f.out, compress.out, kept_out);
  const size_t out_at = kept_qkv.size();
  std::vector<Tensor> saved = std::move(kept_qkv);
  saved.insert(saved.end(), kept_out.begin(), kept_out.end());
  saved.push_back(f.lse);
  // What gives the backward the rotated qkv: the saved one, or the producer's GEMM again and the same RoPE.
  auto rotated_qkv = [remade, make = std::move(remake_qkv.make), qkv_kept, heads_shape, freq,
                      rotary = hq + hkv](const std::vector<Tensor>& kept) {
    if (!remade) return qkv_kept.restore(kept);
    Tensor again = make(kept).reshape(heads_shape);
    ops::rope_(again, freq, /*position_offset=*/0, /*inverse=*/false, rotary);
    return again;
  };
  return tape.record(
      "packed_attention", std::move(out), {qkv}, std::move(saved),
      [hq, hkv, freq = std::move(freq), scale, dqkv_maxima = std::move(dqkv_maxima), rotated_qkv, out_kept, out_at](
          const Tensor& dy, const std::vector<Tensor>& s) -> autograd::Grads {
        const Tensor rotated = rotated_qkv({s.begin(), s.begin() + static_cast<std::ptrdiff_t>(out_at)});
        const Tensor o = out_kept.restore({s.begin() + static_cast<std::ptrdiff_t>(out_at), s.end() - 1});
        const HeadViews in = split_heads(rotated, hq, hkv);
        Tensor dqkv = Tensor::empty(rotated.context(), rotated.shape(), rotated.dtype());
        HeadViews d = split_heads(dqkv, hq, hkv);
        ops::attention_backward(ops::contiguous(dy).reshape(o.shape()), in.q, in.k, in.v, o, s.back(), scale, d.q,
                                d.k, d.v);
        Tensor maxima;
        ops::rope_(dqkv, freq, /*position_offset=*/0, /*inverse=*/true, /*rotary_heads=*/hq + hkv,
                   dqkv_maxima ? &maxima : nullptr);
        Tensor grad = dqkv.reshape({rotated.size(0), rotated.size(1), rotated.size(2) * rotated.size(3)});
        if (dqkv_maxima) dqkv_maxima->put(grad, std::move(maxima));
        return {grad};
      });
}

autograd::Var packed_attention(autograd::Tape& tape, const autograd::Var& qkv, int64_t hq, int64_t hkv,
                               int64_t dh, double theta, double scale) {
  return packed_attention(tape, qkv, hq, hkv, dh, ops::rope_inverse_frequencies(theta, dh), scale);
}

}  // namespace coat::nn
