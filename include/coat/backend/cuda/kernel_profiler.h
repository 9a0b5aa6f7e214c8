// Time per kernel from CUPTI's activity API (CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: kernels keep running
// concurrently; each record carries the kernel's name and its start and end on the GPU). Between start()
// and stop() every kernel launched in the process is recorded; CUPTI hands the records over in buffers
// (its buffer callbacks), which are summed by kernel name as they arrive. Costs a little per launch while
// recording and nothing otherwise. Built only with CUDA and CUPTI (target coat_kernel_profiler).
//
// CUPTI's buffer callbacks are plain C functions without a user pointer, so the profiler that receives
// them is registered process-wide: one KernelProfiler may exist at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace coat::cuda {

struct KernelActivity {
  std::string name;  ///< as CUPTI reports it: the mangled name for C++ kernels
  int64_t calls = 0;
  double total_ms = 0.0;  ///< summed GPU time (end - start) of the calls
};

namespace detail {
struct KernelProfilerState;
}

class KernelProfiler {
 public:
  /// Registers the buffer callbacks with CUPTI. Throws Error when another KernelProfiler exists and
  /// CudaError when CUPTI refuses (the message names the call and CUPTI's error).
  KernelProfiler();
  /// Stops recording if needed and unregisters.
  ~KernelProfiler();
  KernelProfiler(const KernelProfiler&) = delete;
  KernelProfiler& operator=(const KernelProfiler&) = delete;

  /// Starts recording kernels.
  void start();
  /// Waits for the current device (cudaDeviceSynchronize), stops recording and takes in every record
  /// CUPTI still holds. Kernels launched after stop() are not counted.
  void stop();
  bool recording() const;

  /// The kernels recorded so far (over every start/stop), longest total time first.
  std::vector<KernelActivity> kernels() const;
  /// Records CUPTI dropped (no buffer space): when not 0, the counts are too low.
  int64_t dropped_records() const;
  /// Forgets what was recorded.
  void clear();

 private:
  std::shared_ptr<detail::KernelProfilerState> state_;
};

}  // namespace coat::cuda
