// The allocator interface every device context provides, and the CPU allocator.
#pragma once

#include <cstddef>
#include <map>
#include <mutex>
#include <vector>

#include "coat/core/memory_stats.h"

namespace coat {

class Allocator {
 public:
  virtual ~Allocator() = default;
  /// Returns memory for at least `bytes` bytes (aligned to 256 bytes); bytes == 0 gives nullptr.
  virtual void* allocate(size_t bytes, MemoryCategory category) = 0;
  /// Returns memory from allocate() with the same size and category.
  virtual void deallocate(void* ptr, size_t bytes, MemoryCategory category) = 0;
  /// Gives cached but unused memory back to the system.
  virtual void release_cached() {}
  virtual MemoryReport memory_report() const = 0;
  virtual void reset_peaks() = 0;
};

/// Host memory, 256-byte aligned, tracked by category. Blocks of 64 KiB and more are cached by exact
/// size and reused (a training step allocates the same shapes every micro-batch; without the cache each
/// large block would be a fresh mmap and its pages faulted in again, which cost a third of a CPU step).
class CpuAllocator final : public Allocator {
 public:
  ~CpuAllocator() override;
  void* allocate(size_t bytes, MemoryCategory category) override;
  void deallocate(void* ptr, size_t bytes, MemoryCategory category) override;
  void release_cached() override;
  MemoryReport memory_report() const override { return stats_.report(); }
  void reset_peaks() override { stats_.reset_peaks(); }

 private:
  MemoryStats stats_;
  std::mutex mutex_;
  std::map<size_t, std::vector<void*>> cache_;  // rounded size -> free blocks
  size_t cached_bytes_ = 0;
};

}  // namespace coat
