// The sampler of fixed-length training windows: a seeded permutation of the training windows per epoch
// (a keyed Feistel bijection, so no index array is stored), a held-out validation split spread evenly over
// the token stream (the last window of every block of `stride` windows, so that it samples every part of
// the corpus rather than only its end), and a state of two integers that checkpoints make part of a run.
#pragma once

#include <cstdint>
#include <vector>

namespace coat::data {

struct SamplerState {
  uint64_t epoch = 0;
  uint64_t position = 0;  // windows already drawn in this epoch
  bool operator==(const SamplerState&) const = default;
};

class WindowSampler {
 public:
  /// Windows of seq_len + 1 tokens (inputs and shifted targets) start every seq_len tokens; a
  /// validation_fraction of them (at least one when the fraction is > 0), evenly spaced, form the
  /// validation split.
  WindowSampler(uint64_t num_tokens, uint64_t seq_len, uint64_t seed, double validation_fraction);

  uint64_t train_windows() const { return train_windows_; }
  uint64_t validation_windows() const { return total_windows_ - train_windows_; }
  uint64_t seq_len() const { return seq_len_; }
  /// First token of window `w` (w in [0, train_windows + validation_windows)).
  uint64_t window_start(uint64_t w) const { return w * seq_len_; }

  /// The next `count` training windows (window ids) in this epoch's order, moving to the next epoch (a new order)
  /// when this one is exhausted.
  std::vector<uint64_t> next(uint64_t count);
  /// Validation window i (0 <= i < validation_windows()), in file order.
  uint64_t validation_window(uint64_t i) const { return i * stride_ + (stride_ - 1); }
  /// The window of training index i (0 <= i < train_windows()): the windows left after the validation ones.
  uint64_t train_window(uint64_t i) const;

  const SamplerState& state() const { return state_; }
  void set_state(const SamplerState& s);

  /// The epoch's permutation of [0, train_windows): position -> window.
  uint64_t permuted(uint64_t epoch, uint64_t position) const;

 private:
  uint64_t seq_len_, seed_, total_windows_, train_windows_;
  uint64_t stride_ = 1;  // one validation window ends every block of stride_ windows
  int half_bits_;  // the Feistel network works on 2 * half_bits_ bits >= log2(train_windows_)
  SamplerState state_;
};

}  // namespace coat::data
