#include "coat/train/phase_timer.h"

#include <chrono>
#include <optional>
#include <vector>

#include "coat/core/error.h"

#ifdef COAT_WITH_CUDA
#include "coat/backend/cuda/cuda_context.h"
#include "coat/backend/cuda/stream.h"
#endif

namespace coat::train {

const char* phase_name(Phase p) {
  switch (p) {
    case Phase::Forward:
      return "forward";
    case Phase::Backward:
      return "backward";
    case Phase::Optimizer:
      return "optimizer";
  }
  return "?";
}

struct PhaseTimer::Impl {
  ContextPtr context;
  // CPU: the wall-clock start of each open phase.
  std::array<std::optional<std::chrono::steady_clock::time_point>, kNumPhases> started{};
#ifdef COAT_WITH_CUDA
  cuda::CudaContext* cuda = nullptr;
  // CUDA: events are taken from a pool in order and given back by collect().
  std::vector<cuda::Event> pool;
  size_t used = 0;
  std::array<std::optional<size_t>, kNumPhases> open{};  // start event of each open phase
  struct Interval {
    Phase phase;
    size_t start, end;
  };
  std::vector<Interval> ended;

  size_t record() {
    if (used == pool.size()) {
      cuda->make_current();
      pool.emplace_back(cuda::Event::Timing::Enabled);
    }
    pool[used].record(cuda->stream());
    return used++;
  }
#endif
};

PhaseTimer::PhaseTimer(ContextPtr context) : impl_(std::make_unique<Impl>()) {
  COAT_ARG_CHECK(context != nullptr, "PhaseTimer", "no context");
  impl_->context = std::move(context);
#ifdef COAT_WITH_CUDA
  impl_->cuda = dynamic_cast<cuda::CudaContext*>(impl_->context.get());
#endif
}

PhaseTimer::~PhaseTimer() = default;

bool PhaseTimer::device_timed() const {
#ifdef COAT_WITH_CUDA
  return impl_->cuda != nullptr;
#else
  return false;
#endif
}

void PhaseTimer::begin(Phase p) {
  const size_t i = static_cast<size_t>(p);
#ifdef COAT_WITH_CUDA
  if (impl_->cuda) {
    impl_->open[i] = impl_->record();
    return;
  }
#endif
  impl_->started[i] = std::chrono::steady_clock::now();
}

void PhaseTimer::end(Phase p) {
  const size_t i = static_cast<size_t>(p);
#ifdef COAT_WITH_CUDA
  if (impl_->cuda) {
    COAT_CHECK(impl_->open[i].has_value(), Error, "[PhaseTimer] phase '", phase_name(p),
               "' ended without beginning");
    const size_t start = *impl_->open[i];
    impl_->open[i].reset();
    impl_->ended.push_back(Impl::Interval{p, start, impl_->record()});
    return;
  }
#endif
  COAT_CHECK(impl_->started[i].has_value(), Error, "[PhaseTimer] phase '", phase_name(p),
             "' ended without beginning");
  totals_.seconds[i] +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - *impl_->started[i]).count();
  ++totals_.intervals[i];
  impl_->started[i].reset();
}

void PhaseTimer::collect() {
#ifdef COAT_WITH_CUDA
  if (impl_->cuda) {
    if (impl_->used > 0) impl_->pool[impl_->used - 1].synchronize();
    for (const Impl::Interval& r : impl_->ended) {
      const size_t i = static_cast<size_t>(r.phase);
      totals_.seconds[i] += cuda::Event::elapsed_ms(impl_->pool[r.start], impl_->pool[r.end]) * 1e-3;
      ++totals_.intervals[i];
    }
    impl_->ended.clear();
    impl_->open = {};
    impl_->used = 0;
    return;
  }
#endif
  impl_->started = {};
}

}  // namespace coat::train
