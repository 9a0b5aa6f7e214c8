// What the library needs to know about a CUDA device, read once per device by its CudaContext.
#pragma once

#include <cstddef>
#include <string>

namespace coat::cuda {

struct DeviceProperties {
  int device = 0;
  std::string name;
  int compute_capability_major = 0;
  int compute_capability_minor = 0;
  int multiprocessor_count = 0;
  size_t total_memory_bytes = 0;
  size_t l2_cache_bytes = 0;
  /// Largest dynamic shared memory a block may use after opting in
  /// (cudaFuncAttributeMaxDynamicSharedMemorySize).
  size_t max_shared_memory_per_block_optin_bytes = 0;
  int warp_size = 0;

  /// Reads the properties of `device`; throws CudaError when it does not exist.
  static DeviceProperties query(int device);
  /// e.g. 90 for Hopper (9.0).
  int compute_capability() const { return compute_capability_major * 10 + compute_capability_minor; }
  /// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB)".
  std::string str() const;
};

/// Number of visible CUDA devices; 0 (never an exception) when there is no driver or no device. When it
/// returns 0 and `why_none` is given, it receives the runtime's reason.
int device_count(std::string* why_none = nullptr);

}  // namespace coat::cuda
