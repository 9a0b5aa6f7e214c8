// CachingAllocator: size-rounded block cache over cudaMalloc (design in caching_allocator.h).
#include "coat/backend/cuda/caching_allocator.h"

#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "coat/backend/cuda/check.h"
#include "coat/core/error.h"

namespace coat::cuda {

namespace {

// Makes `device` current for the guard's lifetime and restores the previous device afterwards, so that
// allocating for one context never changes the device another part of the program works on.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    COAT_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) COAT_CUDA_CHECK(cudaSetDevice(device));
    device_ = device;
  }
  ~DeviceGuard() {
    if (previous_ != device_) (void)cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  int device_ = 0;
};

size_t round_up(size_t bytes, size_t multiple) {
  return (bytes + multiple - 1) / multiple * multiple;
}

std::string mib(size_t bytes) {
  char text[64];
  std::snprintf(text, sizeof(text), "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return text;
}

}  // namespace

AllocatorMode allocator_mode_from_environment() {
  const char* value = std::getenv("COAT_CUDA_ALLOCATOR");
  if (value == nullptr || std::string_view(value) == "caching") return AllocatorMode::Caching;
  if (std::string_view(value) == "direct") return AllocatorMode::Direct;
  throw InvalidArgument(::coat::detail::concat("environment variable COAT_CUDA_ALLOCATOR is '", value,
                                               "'; expected 'caching' (the default) or 'direct'"));
}

CachingAllocator::CachingAllocator(int device, AllocatorMode mode) : device_(device), mode_(mode) {}

CachingAllocator::~CachingAllocator() {
  std::lock_guard lock(mutex_);
  if (free_small_.empty() && free_large_.empty() && active_.empty()) return;
  // Destructors must not throw: errors are ignored (at process exit the driver may already be gone).
  int previous = -1;
  const bool have_previous = cudaGetDevice(&previous) == cudaSuccess;
  if (cudaSetDevice(device_) == cudaSuccess) {
    (void)cudaDeviceSynchronize();
    for (FreePool* pool : {&free_small_, &free_large_}) {
      for (auto& [bytes, ptr] : *pool) (void)cudaFree(ptr);
      pool->clear();
    }
    for (auto& [ptr, block] : active_) (void)cudaFree(ptr);
    active_.clear();
  }
  if (have_previous && previous != device_) (void)cudaSetDevice(previous);
  (void)cudaGetLastError();
}

size_t CachingAllocator::round_size(size_t bytes) {
  if (bytes <= kSmallLimitBytes) return round_up(bytes, kSmallRoundBytes);
  return round_up(bytes, kLargeRoundBytes);
}

void* CachingAllocator::take_cached_locked(size_t rounded, size_t* block_bytes) {
  const bool small = rounded <= kSmallLimitBytes;
  FreePool& pool = small ? free_small_ : free_large_;
  const size_t limit = small ? 2 * rounded : rounded + kLargeRoundBytes;
  auto it = pool.lower_bound(rounded);  // smallest block >= rounded: an exact size comes first
  if (it == pool.end() || it->first > limit) return nullptr;
  void* ptr = it->second;
  *block_bytes = it->first;
  cached_bytes_ -= it->first;
  pool.erase(it);
  return ptr;
}

void* CachingAllocator::allocate(size_t bytes, MemoryCategory category) {
  if (bytes == 0) return nullptr;
  const size_t rounded = mode_ == AllocatorMode::Direct ? bytes : round_size(bytes);
  std::lock_guard lock(mutex_);
  size_t block_bytes = 0;
  void* ptr = mode_ == AllocatorMode::Direct ? nullptr : take_cached_locked(rounded, &block_bytes);
  if (ptr == nullptr) {
    ptr = system_allocate_locked(rounded, bytes, category);
    block_bytes = rounded;
  }
  active_.emplace(ptr, Block{block_bytes, category});
  stats_.on_allocate(category, block_bytes);
  return ptr;
}

void* CachingAllocator::system_allocate_locked(size_t rounded, size_t requested, MemoryCategory category) {
  DeviceGuard guard(device_);
  void* ptr = nullptr;
  cudaError_t status = cudaMalloc(&ptr, rounded);
  if (status == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // not sticky, but it would linger as the "last error"
    release_cached_locked();
    status = cudaMalloc(&ptr, rounded);
    if (status == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      size_t free_bytes = 0;
      size_t total_bytes = 0;
      if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) (void)cudaGetLastError();
      throw OutOfMemory(::coat::detail::concat(
          "[cuda allocator] out of memory on cuda:", device_, ": could not allocate ", requested, " bytes (",
          mib(rounded), " rounded) for ", memory_category_name(category), "; the device has ",
          mib(free_bytes), " free of ", mib(total_bytes),
          " (the cache was released and the allocation retried)\n", stats_.report().to_string(),
          "HINT: lower the micro-batch size or sequence length, use a memory-saving precision recipe "
          "(coat), or shard the model over more GPUs (mpirun -np N)"));
    }
  }
  if (status != cudaSuccess)
    detail::throw_cuda_error(status, "cudaMalloc(&ptr, rounded)", __FILE__, __LINE__);
  stats_.on_reserve(rounded);
  return ptr;
}

void CachingAllocator::deallocate(void* ptr, size_t /*bytes*/, MemoryCategory /*category*/) {
  if (ptr == nullptr) return;
  std::lock_guard lock(mutex_);
  auto it = active_.find(ptr);
  if (it == active_.end()) {
    // Called from Storage's destructor, so it cannot throw; a pointer we never handed out is a bug.
    std::fprintf(stderr, "[cuda allocator] deallocate of a pointer not allocated here (%p) ignored\n", ptr);
    return;
  }
  // The block's own size and category (recorded at allocation) keep the statistics consistent.
  const Block block = it->second;
  active_.erase(it);
  stats_.on_free(block.category, block.bytes);
  if (mode_ == AllocatorMode::Direct) {
    // cudaFree waits for the device; errors cannot be thrown from here (see above), only reported.
    try {
      DeviceGuard guard(device_);
      const cudaError_t status = cudaFree(ptr);
      if (status != cudaSuccess)
        std::fprintf(stderr, "[cuda allocator] cudaFree(%p) failed: %s\n", ptr, cudaGetErrorString(status));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "[cuda allocator] cudaFree(%p) skipped: %s\n", ptr, e.what());
    }
    stats_.on_release(block.bytes);
    return;
  }
  FreePool& pool = block.bytes <= kSmallLimitBytes ? free_small_ : free_large_;
  pool.emplace(block.bytes, ptr);
  cached_bytes_ += block.bytes;
}

void CachingAllocator::release_cached() {
  std::lock_guard lock(mutex_);
  release_cached_locked();
}

void CachingAllocator::release_cached_locked() {
  if (free_small_.empty() && free_large_.empty()) return;
  DeviceGuard guard(device_);
  // Cached blocks may still be in use by queued kernels (see the stream-order note in the header).
  COAT_CUDA_CHECK(cudaDeviceSynchronize());
  for (FreePool* pool : {&free_small_, &free_large_}) {
    while (!pool->empty()) {
      auto it = pool->begin();
      const size_t bytes = it->first;
      void* ptr = it->second;
      pool->erase(it);
      cached_bytes_ -= bytes;
      COAT_CUDA_CHECK(cudaFree(ptr));
      stats_.on_release(bytes);
    }
  }
}

size_t CachingAllocator::cached_bytes() const {
  std::lock_guard lock(mutex_);
  return cached_bytes_;
}

size_t CachingAllocator::cached_blocks() const {
  std::lock_guard lock(mutex_);
  return free_small_.size() + free_large_.size();
}

}  // namespace coat::cuda
