// Host allocations: 256-byte aligned (so vector loads and BLAS are happy), counted by category.
#include <cstdlib>
#include <new>

#include "coat/core/allocator.h"
#include "coat/core/error.h"

namespace coat {

namespace {
constexpr size_t kAlignment = 256;
size_t round_up(size_t bytes) { return (bytes + kAlignment - 1) / kAlignment * kAlignment; }
}  // namespace

void* CpuAllocator::allocate(size_t bytes, MemoryCategory category) {
  if (bytes == 0) return nullptr;
  size_t rounded = round_up(bytes);
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
  std::free(ptr);
  size_t rounded = round_up(bytes);
  stats_.on_free(category, rounded);
  stats_.on_release(rounded);
}

}  // namespace coat
