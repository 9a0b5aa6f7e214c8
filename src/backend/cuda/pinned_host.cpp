// Pinned host memory through cudaHostAlloc / cudaFreeHost.
#include "coat/backend/cuda/pinned_host.h"

#include <cuda_runtime_api.h>

#include "coat/backend/cuda/check.h"
#include "coat/core/error.h"

namespace coat::cuda {

namespace {
constexpr size_t kAlignment =
    256;  // cudaHostAlloc gives pages; the size is counted as the CPU allocator does
size_t round_up(size_t bytes) {
  return (bytes + kAlignment - 1) / kAlignment * kAlignment;
}
}  // namespace

void* PinnedHostAllocator::allocate(size_t bytes, MemoryCategory category) {
  if (bytes == 0) return nullptr;
  const size_t rounded = round_up(bytes);
  void* ptr = nullptr;
  const cudaError_t status = cudaHostAlloc(&ptr, rounded, cudaHostAllocPortable);
  if (status == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    throw OutOfMemory(::coat::detail::concat(
        "[pinned host allocator] could not pin ", bytes, " bytes of host memory for ",
        memory_category_name(category), "\n", stats_.report().to_string(),
        "HINT: the asynchronous checkpoint keeps a host copy of this rank's masters and optimizer states; "
        "set checkpoint.async = false to save without it (training then waits for the write)"));
  }
  if (status != cudaSuccess) {
    detail::throw_cuda_error(status, "cudaHostAlloc(&ptr, rounded, cudaHostAllocPortable)", __FILE__,
                             __LINE__);
  }
  stats_.on_reserve(rounded);
  stats_.on_allocate(category, rounded);
  return ptr;
}

void PinnedHostAllocator::deallocate(void* ptr, size_t bytes, MemoryCategory category) {
  if (ptr == nullptr) return;
  const size_t rounded = round_up(bytes);
  stats_.on_free(category, rounded);
  stats_.on_release(rounded);
  // A failure here (a context torn down at exit) cannot be acted on; the memory goes with the process.
  if (cudaFreeHost(ptr) != cudaSuccess) (void)cudaGetLastError();
}

}  // namespace coat::cuda
