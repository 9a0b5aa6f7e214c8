// The time of the phases of training steps (forward, backward, optimizer), summed over the steps it
// watches. On a CUDA context a pair of timing events brackets each phase on the context's stream, so the
// times are the GPU's and the step runs without extra host synchronisation; on the CPU it reads the wall
// clock. Phase scopes also open an NVTX range named after the phase ("forward", ...).
#pragma once

#include <array>
#include <cstdint>
#include <exception>
#include <memory>
#include <string_view>

#include "coat/core/context.h"
#include "coat/core/nvtx.h"

namespace coat::train {

enum class Phase : uint8_t { Forward, Backward, Optimizer };
inline constexpr size_t kNumPhases = 3;

/// "forward", "backward", "optimizer" (NUL-terminated: usable as an NVTX range name).
const char* phase_name(Phase p);

struct PhaseTotals {
  std::array<double, kNumPhases> seconds{};     ///< summed time of each phase
  std::array<int64_t, kNumPhases> intervals{};  ///< how many times each phase ran (micro-batches for fwd/bwd)

  double operator[](Phase p) const { return seconds[static_cast<size_t>(p)]; }
  double sum_s() const { return seconds[0] + seconds[1] + seconds[2]; }
};

class PhaseTimer {
 public:
  /// Times on `context`'s device: CUDA events on its stream, or the wall clock on the CPU.
  explicit PhaseTimer(ContextPtr context);
  ~PhaseTimer();
  PhaseTimer(const PhaseTimer&) = delete;
  PhaseTimer& operator=(const PhaseTimer&) = delete;

  /// Marks the start and the end of a phase (in stream order on CUDA). Beginning a phase that is open
  /// restarts it; ending one that is not open is an error. Different phases may nest.
  void begin(Phase p);
  void end(Phase p);
  /// Adds the phases ended so far to totals() and drops any still open (left open by an exception). On
  /// CUDA it waits for the last recorded event: call it outside the timed region, e.g. after each step.
  void collect();
  /// The totals as of the last collect().
  const PhaseTotals& totals() const { return totals_; }
  /// Zeroes the totals.
  void reset() { totals_ = PhaseTotals{}; }
  /// True when the phases are timed by CUDA events (GPU time) rather than the wall clock.
  bool device_timed() const;

  /// A phase for the lifetime of the scope, also an NVTX range of the phase's name. A null timer times
  /// nothing (the range is still there). During an exception's unwinding the phase is not ended.
  class Scope {
   public:
    Scope(PhaseTimer* timer, Phase phase) : range_(phase_name(phase)), timer_(timer), phase_(phase) {
      if (timer_) timer_->begin(phase_);
    }
    ~Scope() noexcept(false) {
      if (timer_ && std::uncaught_exceptions() == exceptions_) timer_->end(phase_);
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    NvtxRange range_;
    PhaseTimer* timer_;
    Phase phase_;
    int exceptions_ = std::uncaught_exceptions();
  };

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  PhaseTotals totals_;
};

}  // namespace coat::train
