// The throwing halves of the checking macros in check.h.
#include "coat/backend/cuda/check.h"

namespace coat::cuda::detail {

namespace {
std::string describe(const char* library, const char* call, const char* file, int line, long code,
                     const char* error_string) {
  return ::coat::detail::concat("[", library, "] ", call, " failed at ", file, ":", line, ": ",
                                error_string != nullptr ? error_string : "unknown error", " (code ", code,
                                ")");
}
}  // namespace

void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line) {
  std::string name = cudaGetErrorName(status);
  throw CudaError(describe("cuda", call, file, line, static_cast<long>(status),
                           (name + ": " + cudaGetErrorString(status)).c_str()));
}

void throw_cublas_error(cublasStatus_t status, const char* call, const char* file, int line) {
  // cublasLtGetStatusString: same strings as cublasGetStatusString, but it lives in libcublasLt, the only
  // cuBLAS library we link (cublasGetStatusString would pull in all of libcublas).
  throw CublasError(
      describe("cublas", call, file, line, static_cast<long>(status), cublasLtGetStatusString(status)));
}

void throw_cudnn_error(cudnnStatus_t status, const char* call, const char* file, int line) {
  throw CudnnError(
      describe("cudnn", call, file, line, static_cast<long>(status), cudnnGetErrorString(status)));
}

void throw_nccl_error(ncclResult_t status, const char* call, const char* file, int line) {
  throw NcclError(describe("nccl", call, file, line, static_cast<long>(status), ncclGetErrorString(status)));
}

}  // namespace coat::cuda::detail
