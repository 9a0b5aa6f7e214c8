// CudaContext: everything one CUDA device needs, owned in one place (no globals): the caching allocator,
// the stream all work is queued on, the cuBLASLt handle and workspace, the matmul plan cache, the cuDNN
// handle (created at first use) with its attention graph cache, the FP8 range expansion's tables (built at
// first use), and the device properties. Plain C++
// (no kernels): includable from g++-compiled files.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstddef>

#include "coat/backend/cuda/caching_allocator.h"
#include "coat/backend/cuda/cudnn_handle.h"
#include "coat/backend/cuda/device_properties.h"
#include "coat/backend/cuda/expand_tables.h"
#include "coat/backend/cuda/matmul_plan_cache.h"
#include "coat/backend/cuda/sdpa_plan_cache.h"
#include "coat/backend/cuda/stream.h"
#include "coat/core/context.h"

namespace coat::cuda {

class CudaContext final : public coat::DeviceContext {
 public:
  static constexpr size_t kCublasLtWorkspaceBytes = size_t{32} << 20;

  /// Makes `device` current and creates its stream, cuBLASLt handle and workspace. Throws CudaError when
  /// the device does not exist (or there is no CUDA device at all).
  explicit CudaContext(int device);
  /// Waits for the stream, then frees in a safe order: workspace, plans, handle, stream, allocator.
  ~CudaContext() override;
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  Device device() const override { return Device::cuda(device_); }
  int device_index() const { return device_; }
  Allocator& allocator() override { return allocator_; }
  CachingAllocator& caching_allocator() { return allocator_; }
  /// Waits until all work queued on the context's stream is done.
  void synchronize() override { stream_.synchronize(); }
  cudaStream_t stream() const { return stream_.get(); }
  const Stream& stream_object() const { return stream_; }
  const DeviceProperties& properties() const { return properties_; }
  cublasLtHandle_t cublaslt() const { return cublaslt_.handle; }
  void* workspace() const { return workspace_; }
  size_t workspace_bytes() const { return kCublasLtWorkspaceBytes; }
  MatmulPlanCache& matmul_plans() { return matmul_plans_; }
  /// The cuDNN handle on the context's stream, created (after a runtime version check) at the first call.
  cudnnHandle_t cudnn() { return cudnn_.get(); }
  SdpaPlanCache& sdpa_plans() { return sdpa_plans_; }
  /// The FP8 range expansion's tables (optimizer moments), built at first use.
  ExpandTables& expand_tables() { return expand_tables_; }
  /// cudaSetDevice(device): call before raw CUDA calls when several devices are used from one thread.
  void make_current() const;

 private:
  struct CublasLtHandle {
    cublasLtHandle_t handle = nullptr;
    CublasLtHandle();
    ~CublasLtHandle();
    CublasLtHandle(const CublasLtHandle&) = delete;
    CublasLtHandle& operator=(const CublasLtHandle&) = delete;
  };

  // Declaration order is construction order; destruction runs in reverse, so the allocator outlives
  // everything allocated from it and the stream outlives the handle and plans that work on it.
  int device_;  // first: its initialiser validates the index and makes the device current
  DeviceProperties properties_;
  CachingAllocator allocator_;
  Stream stream_;
  CublasLtHandle cublaslt_;
  MatmulPlanCache matmul_plans_;
  CudnnHandle cudnn_;  // outlives the graphs built on it
  SdpaPlanCache sdpa_plans_;
  ExpandTables expand_tables_{allocator_};
  void* workspace_ = nullptr;  // from allocator_ (Workspace category), freed in ~CudaContext
};

}  // namespace coat::cuda
