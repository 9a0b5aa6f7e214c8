// Pinned host memory: anonymous pages faulted in by several threads, then registered with the driver
// (cudaHostRegister), released with cudaHostUnregister + munmap.
//
// Why not cudaHostAlloc: measured on an H100 (bench/pinning.cu, 8 GiB), cudaHostAlloc pins at 3.2 GB/s and holds the
// driver's lock all that time, so every CUDA call of the training thread waits (one 8 GiB call or 32 calls of
// 256 MiB alike: a kernel launch on another thread stalled 2.4 s). Faulting the pages in from 16 threads takes
// 0.25 s for 8 GiB and needs no driver lock; registering pages already present takes 0.24 s more (36 GB/s),
// and only that part holds the lock. For the 38.8 GiB of the 7B snapshot buffers: about 2.5 s instead of 23.
// Device-to-host copies into either kind of buffer run at the same 55 GB/s. A copy must stay inside one
// registration (one allocation), as it must stay inside one cudaHostAlloc block.
#include "coat/backend/cuda/pinned_host.h"

#include <cuda_runtime_api.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "coat/backend/cuda/check.h"
#include "coat/core/error.h"
#include "coat/core/host_memory.h"

namespace coat::cuda {

namespace {

size_t page_size() {
  const long page = sysconf(_SC_PAGESIZE);
  return page > 0 ? static_cast<size_t>(page) : 4096;
}

size_t round_up(size_t bytes) {
  const size_t page = page_size();
  return (bytes + page - 1) / page * page;
}

/// Writes one byte per page from up to 16 threads, so that the kernel faults the pages in (zeroed) before
/// the driver pins them: faulting is the slow part of pinning and needs no driver lock.
void fault_in(char* base, size_t bytes) {
  constexpr size_t kBytesPerThread = size_t{64} << 20;
  const size_t hardware = std::max(1u, std::thread::hardware_concurrency());
  const size_t threads = std::clamp<size_t>(bytes / kBytesPerThread, 1, std::min<size_t>(16, hardware));
  const size_t page = page_size();
  const size_t pages = bytes / page;
  auto touch = [=](size_t first, size_t last) {
    for (size_t p = first; p < last; ++p) base[p * page] = 0;
  };
  if (threads == 1) return touch(0, pages);
  std::vector<std::thread> workers;
  const size_t per = (pages + threads - 1) / threads;
  for (size_t t = 0; t < threads; ++t) {
    const size_t first = t * per;
    if (first < pages) workers.emplace_back(touch, first, std::min(pages, first + per));
  }
  for (std::thread& w : workers) w.join();
}

std::string out_of_memory_message(size_t bytes, MemoryCategory category, const MemoryStats& stats,
                                  const std::string& why) {
  return ::coat::detail::concat(
      "[pinned host allocator] could not pin ", bytes, " bytes of host memory for ",
      memory_category_name(category), ": ", why, "\n", stats.report().to_string(),
      "HINT: the asynchronous checkpoint keeps a host copy of this rank's masters and optimizer states; "
      "set checkpoint.async = false to save without it (training then waits for the write)");
}

}  // namespace

void* PinnedHostAllocator::allocate(size_t bytes, MemoryCategory category) {
  if (bytes == 0) return nullptr;
  const size_t rounded = round_up(bytes);
  const size_t available = available_host_bytes();
  if (available != 0 && rounded > available) {
    throw OutOfMemory(out_of_memory_message(
        bytes, category, stats_,
        ::coat::detail::concat("the system has ", available, " bytes available (MemAvailable)")));
  }
  void* ptr = mmap(nullptr, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (ptr == MAP_FAILED) throw OutOfMemory(out_of_memory_message(bytes, category, stats_, "mmap failed"));
  // A child process (fork) must not share these pages copy-on-write: a write by this process after a fork
  // would move its mapping off the page the GPU copies into. cudaHostAlloc's pages are kept out of forks too.
  (void)madvise(ptr, rounded, MADV_DONTFORK);
  fault_in(static_cast<char*>(ptr), rounded);
  const cudaError_t status = cudaHostRegister(ptr, rounded, cudaHostRegisterPortable);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    munmap(ptr, rounded);
    if (status == cudaErrorMemoryAllocation || status == cudaErrorHostMemoryAlreadyRegistered) {
      throw OutOfMemory(out_of_memory_message(bytes, category, stats_, cudaGetErrorString(status)));
    }
    detail::throw_cuda_error(status, "cudaHostRegister(ptr, rounded, cudaHostRegisterPortable)", __FILE__,
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
  // A failure here (a context torn down at exit) cannot be acted on; the pages go with the process.
  if (cudaHostUnregister(ptr) != cudaSuccess) (void)cudaGetLastError();
  munmap(ptr, rounded);
}

}  // namespace coat::cuda
