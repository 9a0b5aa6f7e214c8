// Checking macros for CUDA runtime, cuBLAS/cuBLASLt, cuDNN and NCCL calls: a failing call throws the typed
// exception of coat/core/error.h naming the call, its file:line and the library's error string.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>
#include <nccl.h>

#include "coat/core/error.h"

namespace coat::cuda::detail {

// Out of line (check.cpp) so that each macro expands to one compare and one call.
[[noreturn]] void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* call, const char* file, int line);
[[noreturn]] void throw_cudnn_error(cudnnStatus_t status, const char* call, const char* file, int line);
[[noreturn]] void throw_nccl_error(ncclResult_t status, const char* call, const char* file, int line);

}  // namespace coat::cuda::detail

#define COAT_CUDA_CHECK(call)                                                          \
  do {                                                                                 \
    const cudaError_t coat_status_ = (call);                                           \
    if (coat_status_ != cudaSuccess)                                                   \
      ::coat::cuda::detail::throw_cuda_error(coat_status_, #call, __FILE__, __LINE__); \
  } while (0)

/// For cuBLAS and cuBLASLt calls (both return cublasStatus_t).
#define COAT_CUBLAS_CHECK(call)                                                          \
  do {                                                                                   \
    const cublasStatus_t coat_status_ = (call);                                          \
    if (coat_status_ != CUBLAS_STATUS_SUCCESS)                                           \
      ::coat::cuda::detail::throw_cublas_error(coat_status_, #call, __FILE__, __LINE__); \
  } while (0)

#define COAT_CUDNN_CHECK(call)                                                          \
  do {                                                                                  \
    const cudnnStatus_t coat_status_ = (call);                                          \
    if (coat_status_ != CUDNN_STATUS_SUCCESS)                                           \
      ::coat::cuda::detail::throw_cudnn_error(coat_status_, #call, __FILE__, __LINE__); \
  } while (0)

#define COAT_NCCL_CHECK(call)                                                          \
  do {                                                                                 \
    const ncclResult_t coat_status_ = (call);                                          \
    if (coat_status_ != ncclSuccess)                                                   \
      ::coat::cuda::detail::throw_nccl_error(coat_status_, #call, __FILE__, __LINE__); \
  } while (0)

/// After a kernel launch: reports (and clears) a launch error such as a bad grid or missing kernel image.
/// Errors of the kernel's execution surface at the next synchronising call.
#define COAT_CUDA_CHECK_LAST_LAUNCH() COAT_CUDA_CHECK(cudaGetLastError())
