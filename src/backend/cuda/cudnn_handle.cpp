// The lazily created cuDNN handle and the run-time version check.
#include "coat/backend/cuda/cudnn_handle.h"

#include <string>

#include "coat/backend/cuda/check.h"
#include "coat/core/error.h"

namespace coat::cuda {

namespace {
std::string version_str(size_t v) {
  return std::to_string(v / 10000) + "." + std::to_string((v / 100) % 100) + "." + std::to_string(v % 100);
}
}  // namespace

size_t CudnnHandle::compiled_version() {
  return CUDNN_VERSION;
}

size_t CudnnHandle::runtime_version() {
  return cudnnGetVersion();
}

void CudnnHandle::check_runtime_version() {
  const size_t compiled = compiled_version(), runtime = runtime_version();
  COAT_CHECK(runtime / 10000 == compiled / 10000 && runtime >= compiled, CudnnError,
             "[cudnn] the cuDNN loaded at run time is ", version_str(runtime),
             " but this build was compiled against cuDNN ", version_str(compiled),
             " (cudnn.h) and needs that version or a newer one of the same major version",
             "\nHINT: put a newer libcudnn.so.", compiled / 10000,
             " first on LD_LIBRARY_PATH (on the GPU hosts: `source scripts/gpu_env.sh`, which uses the cuDNN "
             "that PyTorch ships)");
}

CudnnHandle::~CudnnHandle() {
  if (handle_ != nullptr) {
    (void)cudaSetDevice(device_);
    (void)cudnnDestroy(handle_);
  }
}

cudnnHandle_t CudnnHandle::get() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (handle_ != nullptr) return handle_;
  check_runtime_version();
  COAT_CUDA_CHECK(cudaSetDevice(device_));
  cudnnHandle_t handle = nullptr;
  COAT_CUDNN_CHECK(cudnnCreate(&handle));
  const cudnnStatus_t status = cudnnSetStream(handle, stream_);
  if (status != CUDNN_STATUS_SUCCESS) {
    (void)cudnnDestroy(handle);
    detail::throw_cudnn_error(status, "cudnnSetStream(handle, stream_)", __FILE__, __LINE__);
  }
  handle_ = handle;
  return handle_;
}

}  // namespace coat::cuda
