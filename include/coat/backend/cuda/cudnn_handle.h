// The cuDNN handle of a CudaContext: created at first use (most runs never call cuDNN), bound to the
// context's stream. Creation first checks that the cuDNN library loaded at run time is not older than the
// cudnn.h this build was compiled against, and refuses it with a clear message otherwise (the GPU hosts'
// system cuDNN 9.14 is older than the toolkit's 9.19 headers; scripts/gpu_env.sh puts PyTorch's newer cuDNN
// first on LD_LIBRARY_PATH). Plain C++: includable from g++-compiled files.
#pragma once

#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <cstddef>
#include <mutex>

namespace coat::cuda {

class CudnnHandle {
 public:
  /// Remembers the device and stream; creates nothing yet.
  CudnnHandle(int device, cudaStream_t stream) : device_(device), stream_(stream) {}
  ~CudnnHandle();
  CudnnHandle(const CudnnHandle&) = delete;
  CudnnHandle& operator=(const CudnnHandle&) = delete;

  /// The handle, created on the first call (version check, cudnnCreate, cudnnSetStream). Throws CudnnError
  /// when the runtime cuDNN is too old or creation fails; a later call tries again.
  cudnnHandle_t get();

  /// cuDNN's version numbers: what this build was compiled against (CUDNN_VERSION of cudnn.h) and what is
  /// loaded now (cudnnGetVersion()), both as major * 10000 + minor * 100 + patch.
  static size_t compiled_version();
  static size_t runtime_version();
  /// Throws CudnnError naming both versions and the fix when the runtime is older than the compiled
  /// version or of another major version.
  static void check_runtime_version();

 private:
  int device_;
  cudaStream_t stream_;
  std::mutex mutex_;
  cudnnHandle_t handle_ = nullptr;
};

}  // namespace coat::cuda
