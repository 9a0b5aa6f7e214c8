// Window sampler: Feistel permutation with cycle walking (a bijection on [0, n) from a keyed network on
// the next power of four), so each epoch's order costs O(1) memory and any position can be resumed.
#include "coat/data/window_sampler.h"

#include <cmath>

#include "coat/core/error.h"
#include "coat/core/philox.h"

namespace coat::data {

WindowSampler::WindowSampler(uint64_t num_tokens, uint64_t seq_len, uint64_t seed, double validation_fraction)
    : seq_len_(seq_len), seed_(seed) {
  COAT_ARG_CHECK(seq_len > 0, "sampler", "seq_len must be positive");
  COAT_ARG_CHECK(validation_fraction >= 0.0 && validation_fraction < 1.0, "sampler", "validation fraction ",
                 validation_fraction, " must be in [0, 1)");
  total_windows_ = num_tokens > seq_len ? (num_tokens - 1) / seq_len : 0;
  uint64_t validation = static_cast<uint64_t>(std::floor(validation_fraction * static_cast<double>(total_windows_)));
  if (validation_fraction > 0.0 && validation == 0 && total_windows_ > 1) validation = 1;
  train_windows_ = total_windows_ - validation;
  COAT_ARG_CHECK(train_windows_ > 0, "sampler", "the data holds ", num_tokens, " tokens: not one training window of ",
                 seq_len + 1, " tokens (with validation fraction ", validation_fraction, ")");
  stride_ = validation > 0 ? total_windows_ / validation : 1;
  half_bits_ = 1;
  while ((uint64_t{1} << (2 * half_bits_)) < train_windows_) ++half_bits_;
}

uint64_t WindowSampler::permuted(uint64_t epoch, uint64_t position) const {
  const uint64_t mask = (uint64_t{1} << half_bits_) - 1;
  uint64_t x = position;
  // Cycle walking: apply the bijection on [0, 4^half_bits) until the value lands inside [0, n); since the
  // domain is less than 4x larger than n this takes few steps on average.
  do {
    uint64_t left = x >> half_bits_, right = x & mask;
    for (uint32_t round = 0; round < 4; ++round) {
      const Philox4x32Result r =
          philox4x32_10(static_cast<uint32_t>(right), static_cast<uint32_t>(right >> 32),
                        static_cast<uint32_t>(epoch), round, static_cast<uint32_t>(seed_),
                        static_cast<uint32_t>(seed_ >> 32));
      const uint64_t f = (uint64_t{r.v[0]} | (uint64_t{r.v[1]} << 32)) & mask;
      const uint64_t next_right = left ^ f;
      left = right;
      right = next_right;
    }
    x = (left << half_bits_) | right;
  } while (x >= train_windows_);
  return x;
}

std::vector<uint64_t> WindowSampler::next(uint64_t count) {
  std::vector<uint64_t> windows;
  windows.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    if (state_.position >= train_windows_) {
      ++state_.epoch;
      state_.position = 0;
    }
    windows.push_back(train_window(permuted(state_.epoch, state_.position++)));
  }
  return windows;
}

uint64_t WindowSampler::train_window(uint64_t i) const {
  const uint64_t validation = total_windows_ - train_windows_;
  if (validation == 0) return i;
  const uint64_t per_block = stride_ - 1;  // training windows in each block that ends with a validation one
  if (per_block > 0 && i < validation * per_block) return (i / per_block) * stride_ + i % per_block;
  return validation * stride_ + (i - validation * per_block);
}

void WindowSampler::set_state(const SamplerState& s) {
  COAT_ARG_CHECK(s.position <= train_windows_, "sampler", "saved position ", s.position, " is past the ",
                 train_windows_, " training windows of this data (was the data or seq_len changed?)");
  state_ = s;
}

}  // namespace coat::data
