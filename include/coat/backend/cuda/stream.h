// RAII wrappers of a CUDA stream and a CUDA event. Both are movable, not copyable; a moved-from object
// holds nothing and its destructor does nothing.
#pragma once

#include <cuda_runtime_api.h>

namespace coat::cuda {

class Event;

/// A non-blocking stream (cudaStreamNonBlocking: no implicit ordering with the legacy default stream),
/// created on the device that is current at construction.
class Stream {
 public:
  Stream();
  ~Stream();
  Stream(Stream&& other) noexcept;
  Stream& operator=(Stream&& other) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  cudaStream_t get() const { return stream_; }
  /// Blocks the host until all work queued so far on this stream is done.
  void synchronize() const;
  /// Work queued on this stream after this call waits for `event` (recorded on any stream) to complete.
  void wait(const Event& event) const;

 private:
  cudaStream_t stream_ = nullptr;
};

/// A CUDA event. Without timing (the default) it is cheaper to record and wait on; elapsed_ms needs two
/// events created with timing enabled.
class Event {
 public:
  enum class Timing { Disabled, Enabled };

  explicit Event(Timing timing = Timing::Disabled);
  ~Event();
  Event(Event&& other) noexcept;
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  cudaEvent_t get() const { return event_; }
  bool timing_enabled() const { return timing_ == Timing::Enabled; }
  /// Captures the work queued on `stream` so far.
  void record(const Stream& stream);
  void record(cudaStream_t stream);
  /// Blocks the host until the recorded work is done.
  void synchronize() const;
  /// True when the recorded work is done (does not block).
  bool query() const;
  /// Milliseconds between two recorded, completed events; both need Timing::Enabled.
  static float elapsed_ms(const Event& start, const Event& end);

 private:
  cudaEvent_t event_ = nullptr;
  Timing timing_ = Timing::Disabled;
};

}  // namespace coat::cuda
