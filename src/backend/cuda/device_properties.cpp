// DeviceProperties::query and device_count, on the CUDA runtime API.
#include "coat/backend/cuda/device_properties.h"

#include <cuda_runtime_api.h>

#include <cstdio>

#include "coat/backend/cuda/check.h"

namespace coat::cuda {

DeviceProperties DeviceProperties::query(int device) {
  cudaDeviceProp prop{};
  COAT_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  DeviceProperties p;
  p.device = device;
  p.name = prop.name;
  p.compute_capability_major = prop.major;
  p.compute_capability_minor = prop.minor;
  p.multiprocessor_count = prop.multiProcessorCount;
  p.total_memory_bytes = prop.totalGlobalMem;
  p.l2_cache_bytes = static_cast<size_t>(prop.l2CacheSize);
  p.max_shared_memory_per_block_optin_bytes = prop.sharedMemPerBlockOptin;
  p.warp_size = prop.warpSize;
  return p;
}

std::string DeviceProperties::str() const {
  char text[256];
  std::snprintf(text, sizeof(text), "%s (sm_%d%d, %d SMs, %.1f GiB)", name.c_str(), compute_capability_major,
                compute_capability_minor, multiprocessor_count,
                static_cast<double>(total_memory_bytes) / (1024.0 * 1024.0 * 1024.0));
  return text;
}

int device_count(std::string* why_none) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    // The failed call is also the runtime's "last error": clear it, so that a later
    // COAT_CUDA_CHECK_LAST_LAUNCH does not report it against an unrelated kernel.
    (void)cudaGetLastError();
    if (why_none != nullptr)
      *why_none = std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
    return 0;
  }
  if (count == 0 && why_none != nullptr) *why_none = "the CUDA runtime reports 0 devices";
  return count;
}

}  // namespace coat::cuda
