// The state of a counter-based random stream: a seed and how many numbers were drawn so far.
// Fills draw element i from Philox(seed, offset + i) and then advance the offset by the element count,
// so the same (seed, offset) gives the same tensor on any device, and the state is two integers to
// checkpoint.
#pragma once

#include <cstdint>

namespace coat {

struct RandomGenerator {
  uint64_t seed = 0;
  uint64_t offset = 0;

  /// Returns the current offset and reserves `count` numbers after it.
  uint64_t take(uint64_t count) {
    uint64_t start = offset;
    offset += count;
    return start;
  }
};

}  // namespace coat
