// CudaContext construction and teardown.
#include "coat/backend/cuda/cuda_context.h"

#include <string>

#include "coat/backend/cuda/check.h"
#include "coat/core/error.h"

namespace coat::cuda {

namespace {
int select_device(int device) {
  std::string why_none;
  const int count = device_count(&why_none);
  COAT_CHECK(count > 0, CudaError, "[CudaContext] no CUDA device available (", why_none,
             ")\nHINT: run on a machine with an NVIDIA GPU, or use the cpu device");
  COAT_CHECK(device >= 0 && device < count, CudaError, "[CudaContext] device ", device, " requested but ",
             count, " CUDA device(s) are visible\nHINT: check CUDA_VISIBLE_DEVICES and the device index");
  COAT_CUDA_CHECK(cudaSetDevice(device));
  return device;
}
}  // namespace

CudaContext::CublasLtHandle::CublasLtHandle() {
  COAT_CUBLAS_CHECK(cublasLtCreate(&handle));
}

CudaContext::CublasLtHandle::~CublasLtHandle() {
  if (handle != nullptr) (void)cublasLtDestroy(handle);
}

CudaContext::CudaContext(int device)
    : device_(select_device(device)),
      properties_(DeviceProperties::query(device_)),
      allocator_(device_, allocator_mode_from_environment()),
      cudnn_(device_, stream_.get()) {
  workspace_ = allocator_.allocate(kCublasLtWorkspaceBytes, MemoryCategory::Workspace);
}

CudaContext::~CudaContext() {
  // Nothing may throw here. Queued work may still use the workspace or the stream: wait for it first.
  (void)cudaSetDevice(device_);
  (void)cudaStreamSynchronize(stream_.get());
  allocator_.deallocate(workspace_, kCublasLtWorkspaceBytes, MemoryCategory::Workspace);
  workspace_ = nullptr;
  (void)cudaGetLastError();
  // Members go next, in reverse order: attention graphs, cuDNN handle, matmul plans, cuBLASLt handle,
  // stream, allocator (which cudaFrees all).
}

void CudaContext::make_current() const {
  COAT_CUDA_CHECK(cudaSetDevice(device_));
}

}  // namespace coat::cuda
