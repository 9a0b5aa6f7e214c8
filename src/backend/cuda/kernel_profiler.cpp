#include "coat/backend/cuda/kernel_profiler.h"

#include <cuda_runtime_api.h>
#include <cupti.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string_view>

#include "coat/backend/cuda/check.h"
#include "coat/core/error.h"

namespace coat::cuda {

namespace detail {

struct KernelProfilerState {
  struct Sum {
    int64_t calls = 0;
    uint64_t ns = 0;
  };
  mutable std::mutex mutex;
  std::map<std::string, Sum, std::less<>> by_name;  // found by string_view: no allocation per record
  int64_t dropped = 0;
  bool recording = false;

  void take(const uint8_t* buffer, size_t valid_bytes) {
    std::lock_guard<std::mutex> lock(mutex);
    CUpti_Activity* record = nullptr;
    while (cuptiActivityGetNextRecord(const_cast<uint8_t*>(buffer), valid_bytes, &record) == CUPTI_SUCCESS) {
      if (record->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL && record->kind != CUPTI_ACTIVITY_KIND_KERNEL)
        continue;
      const auto* kernel = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
      const std::string_view name = kernel->name != nullptr ? kernel->name : "(unnamed kernel)";
      auto it = by_name.find(name);
      if (it == by_name.end()) it = by_name.emplace(std::string(name), Sum{}).first;
      ++it->second.calls;
      if (kernel->end > kernel->start) it->second.ns += kernel->end - kernel->start;  // 0, 0: no timestamps
    }
    size_t dropped_now = 0;
    if (cuptiActivityGetNumDroppedRecords(nullptr, 0, &dropped_now) == CUPTI_SUCCESS) {
      dropped += static_cast<int64_t>(dropped_now);
    }
  }
};

}  // namespace detail

namespace {

using detail::KernelProfilerState;

// The process-wide registration that CUPTI's C callbacks need (they carry no user pointer): the active
// profiler's state, shared so that a callback in flight keeps it alive.
struct Registry {
  std::mutex mutex;
  std::shared_ptr<KernelProfilerState> active;
};
Registry& registry() {
  static Registry r;
  return r;
}

std::shared_ptr<KernelProfilerState> active_state() {
  std::lock_guard<std::mutex> lock(registry().mutex);
  return registry().active;
}

constexpr size_t kBufferBytes = size_t{8} << 20;

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));  // CUPTI wants 8-byte alignment
  *size = *buffer != nullptr ? kBufferBytes : 0;
  *max_records = 0;  // as many as fit
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid_bytes) {
  if (std::shared_ptr<KernelProfilerState> state = active_state(); state && valid_bytes > 0) {
    state->take(buffer, valid_bytes);
  }
  std::free(buffer);
}

void check_cupti(CUptiResult status, const char* call) {
  if (status == CUPTI_SUCCESS) return;
  const char* text = nullptr;
  if (cuptiGetResultString(status, &text) != CUPTI_SUCCESS) text = nullptr;
  throw CudaError(::coat::detail::concat("[cupti] ", call,
                                         " failed: ", text != nullptr ? text : "unknown error", " (code ",
                                         static_cast<int>(status), ")"));
}

#define COAT_CUPTI_CHECK(call) check_cupti((call), #call)

}  // namespace

KernelProfiler::KernelProfiler() : state_(std::make_shared<KernelProfilerState>()) {
  {
    std::lock_guard<std::mutex> lock(registry().mutex);
    COAT_CHECK(
        registry().active == nullptr, Error,
        "[KernelProfiler] another KernelProfiler exists: CUPTI's activity buffers go to one per process");
    registry().active = state_;
  }
  try {
    COAT_CUPTI_CHECK(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed));
  } catch (...) {
    std::lock_guard<std::mutex> lock(registry().mutex);
    registry().active.reset();
    throw;
  }
}

KernelProfiler::~KernelProfiler() {
  if (recording()) {
    // No exceptions from a destructor: what fails here only loses records.
    (void)cuptiActivityDisable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
    (void)cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  }
  std::lock_guard<std::mutex> lock(registry().mutex);
  registry().active.reset();
}

void KernelProfiler::start() {
  if (recording()) return;
  COAT_CUPTI_CHECK(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL));
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->recording = true;
}

void KernelProfiler::stop() {
  if (!recording()) return;
  COAT_CUDA_CHECK(cudaDeviceSynchronize());
  COAT_CUPTI_CHECK(cuptiActivityDisable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL));
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->recording = false;
  }
  // Every kernel is done (synchronised above): a forced flush hands over all buffers, full or not.
  COAT_CUPTI_CHECK(cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED));
}

bool KernelProfiler::recording() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->recording;
}

std::vector<KernelActivity> KernelProfiler::kernels() const {
  std::vector<KernelActivity> out;
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    for (const auto& [name, sum] : state_->by_name) {
      out.push_back(KernelActivity{name, sum.calls, static_cast<double>(sum.ns) * 1e-6});
    }
  }
  std::sort(out.begin(), out.end(), [](const KernelActivity& a, const KernelActivity& b) {
    return a.total_ms != b.total_ms ? a.total_ms > b.total_ms : a.name < b.name;
  });
  return out;
}

int64_t KernelProfiler::dropped_records() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->dropped;
}

void KernelProfiler::clear() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->by_name.clear();
  state_->dropped = 0;
}

}  // namespace coat::cuda
