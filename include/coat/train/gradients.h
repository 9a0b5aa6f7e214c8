// One forward and backward pass outside the training loop: the loss and every parameter's gradient of the
// mean next-token cross-entropy over a batch, as the trainer's step computes them before its update (for
// parity checks against other implementations, coat-grads).
#pragma once

#include <cstdint>

#include "coat/data/token_file.h"
#include "coat/models/transformer.h"

namespace coat::train {

/// Token ids and next-token targets, [rows, seq] I32 each, on `context`'s device.
struct TokenBatch {
  Tensor ids;
  Tensor targets;
};

/// Row r of the batch is the trainer's window `first_window + r` (WindowSampler::window_start: tokens
/// [w * seq, w * seq + seq] of the file): ids are its first seq tokens, targets the seq tokens after the
/// first. Throws InvalidArgument naming the file when it holds too few tokens, IoError when a token is
/// outside model_vocab.
TokenBatch read_windows(const data::TokenFile& tokens, int64_t first_window, int64_t rows, int64_t seq,
                        int64_t model_vocab, const ContextPtr& context);

struct GradientResult {
  double loss = 0.0;   ///< mean cross-entropy over the counted targets
  int64_t tokens = 0;  ///< targets counted
};

/// Zeroes the model's gradients, runs forward and backward once with loss = mean cross-entropy over all
/// targets (grad_scale 1 / tokens, as the trainer's step over one micro-batch), and leaves the gradients in
/// the parameters' grad tensors (the master dtype). The model must have gradient buffers.
GradientResult compute_gradients(models::Transformer& model, const TokenBatch& batch);

}  // namespace coat::train
