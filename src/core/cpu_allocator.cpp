// Host allocations: 256-byte aligned (so vector loads and BLAS are happy), counted by category.
#include <cstdlib>
#include <new>

#include "coat/core/allocator.h"
#include "coat/core/error.h"

namespace coat {

namespace {
constexpr size_t kAlignment = 256;
constexpr size_t kCacheMinBytes = size_t{64} << 10;   // smaller blocks: malloc's own free lists are fast
constexpr size_t kCacheMaxBytes = size_t{2} << 30;    // beyond this, freed blocks go back to the system
size_t round_up(size_t bytes) { return (bytes + kAlignment - 1) / kAlignment * kAlignment; }
}  // namespace

void* CpuAllocator::allocate(size_t bytes, MemoryCategory category) {
  if (bytes == 0) return nullptr;
  size_t rounded = round_up(bytes);
  if (rounded >= kCacheMinBytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = cache_.find(rounded);
    if (it != cache_.end() && !it->second.empty()) {
      void* reused = it->second.back();
      it->second.pop_back();
      cached_bytes_ -= rounded;
      stats_.on_allocate(category, rounded);
      return reused;
    }
  }
  void* ptr = std::aligned_alloc(kAlignment, rounded);
  if (ptr == nullptr) {
    throw OutOfMemory(detail::concat("[cpu allocator] could not allocate ", bytes, " bytes for ",
                                     memory_category_name(category), "\n", stats_.report().to_string()));
  }
  stats_.on_reserve(rounded);
  stats_.on_allocate(category, rounded);
  return ptr;
}

void CpuAllocator::deallocate(void* ptr, size_t bytes, MemoryCategory category) {
  if (ptr == nullptr) return;
  size_t rounded = round_up(bytes);
  stats_.on_free(category, rounded);
  if (rounded >= kCacheMinBytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (cached_bytes_ + rounded <= kCacheMaxBytes) {
      cache_[rounded].push_back(ptr);
      cached_bytes_ += rounded;
      return;
    }
  }
  std::free(ptr);
  stats_.on_release(rounded);
}

void CpuAllocator::release_cached() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [size, blocks] : cache_) {
    for (void* p : blocks) {
      std::free(p);
      stats_.on_release(size);
    }
  }
  cache_.clear();
  cached_bytes_ = 0;
}

CpuAllocator::~CpuAllocator() { release_cached(); }

}  // namespace coat
