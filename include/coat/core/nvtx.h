// NVTX ranges, so that Nsight Systems shows the structure of a step on its timeline: "step", "forward",
// "block 3", "linear", "linear bwd", "optimizer", ... In a CUDA build a range is a push/pop on NVTX's
// default domain (nvtx3, header-only: with no tool attached each call returns at once through a function
// pointer, a few nanoseconds); in a CPU-only build it compiles to nothing. Ranges nest per thread, so
// one must end on the thread that began it (RAII does that).
#pragma once

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstring>

#ifdef COAT_WITH_CUDA
#include <nvtx3/nvToolsExt.h>
#endif

namespace coat {

#ifdef COAT_WITH_CUDA
inline constexpr bool kNvtxEnabled = true;
#else
inline constexpr bool kNvtxEnabled = false;
#endif

/// An NVTX range for the lifetime of the object. The name is copied by the tool when the range begins,
/// so a temporary buffer is fine.
class NvtxRange {
 public:
  explicit NvtxRange(const char* name) noexcept { push(name); }
  /// "<prefix> <index>", e.g. NvtxRange("block", 3) -> "block 3"; formatted on the stack (no allocation).
  NvtxRange(const char* prefix, int64_t index) noexcept {
    if constexpr (kNvtxEnabled) {
      char buf[64];
      const size_t n = std::min(std::strlen(prefix), sizeof(buf) - 24);
      std::memcpy(buf, prefix, n);
      buf[n] = ' ';
      char* end = std::to_chars(buf + n + 1, buf + sizeof(buf) - 1, index).ptr;
      *end = '\0';
      push(buf);
    }
  }
  ~NvtxRange() { pop(); }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;

 private:
  static void push([[maybe_unused]] const char* name) noexcept {
#ifdef COAT_WITH_CUDA
    nvtxRangePushA(name);
#endif
  }
  static void pop() noexcept {
#ifdef COAT_WITH_CUDA
    nvtxRangePop();
#endif
  }
};

}  // namespace coat
