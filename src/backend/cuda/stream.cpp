// Stream and Event: creation, destruction and the few operations the library needs.
#include "coat/backend/cuda/stream.h"

#include <utility>

#include "coat/backend/cuda/check.h"

namespace coat::cuda {

Stream::Stream() {
  COAT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
}

Stream::~Stream() {
  // No throwing from a destructor; a failure here (e.g. the driver shutting down) is not actionable.
  if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
}

Stream::Stream(Stream&& other) noexcept : stream_(std::exchange(other.stream_, nullptr)) {}

Stream& Stream::operator=(Stream&& other) noexcept {
  if (this != &other) {
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
    stream_ = std::exchange(other.stream_, nullptr);
  }
  return *this;
}

void Stream::synchronize() const {
  COAT_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void Stream::wait(const Event& event) const {
  COAT_CUDA_CHECK(cudaStreamWaitEvent(stream_, event.get(), cudaEventWaitDefault));
}

Event::Event(Timing timing) : timing_(timing) {
  const unsigned flags = timing == Timing::Enabled ? cudaEventDefault : cudaEventDisableTiming;
  COAT_CUDA_CHECK(cudaEventCreateWithFlags(&event_, flags));
}

Event::~Event() {
  if (event_ != nullptr) (void)cudaEventDestroy(event_);
}

Event::Event(Event&& other) noexcept : event_(std::exchange(other.event_, nullptr)), timing_(other.timing_) {}

Event& Event::operator=(Event&& other) noexcept {
  if (this != &other) {
    if (event_ != nullptr) (void)cudaEventDestroy(event_);
    event_ = std::exchange(other.event_, nullptr);
    timing_ = other.timing_;
  }
  return *this;
}

void Event::record(const Stream& stream) {
  record(stream.get());
}

void Event::record(cudaStream_t stream) {
  COAT_CUDA_CHECK(cudaEventRecord(event_, stream));
}

void Event::synchronize() const {
  COAT_CUDA_CHECK(cudaEventSynchronize(event_));
}

bool Event::query() const {
  const cudaError_t status = cudaEventQuery(event_);
  if (status == cudaErrorNotReady) return false;
  if (status != cudaSuccess) detail::throw_cuda_error(status, "cudaEventQuery(event_)", __FILE__, __LINE__);
  return true;
}

float Event::elapsed_ms(const Event& start, const Event& end) {
  COAT_CHECK(start.timing_enabled() && end.timing_enabled(), InvalidArgument,
             "[Event::elapsed_ms] both events need Event::Timing::Enabled");
  float ms = 0.0f;
  COAT_CUDA_CHECK(cudaEventElapsedTime(&ms, start.event_, end.event_));
  return ms;
}

}  // namespace coat::cuda
