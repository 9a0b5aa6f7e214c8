// The CUDA device allocator: caches freed blocks by size so that the steady state of training makes no
// cudaMalloc/cudaFree calls, and counts memory by category.
//
// Sizes. A request is rounded up to a multiple of 512 bytes when it is at most 1 MiB ("small") and to a
// multiple of 2 MiB above ("large"). Each block is one whole cudaMalloc allocation (256-byte aligned);
// blocks are never split or merged, which keeps the bookkeeping trivial and is enough for training, where
// the same tensor sizes come back every step.
//
// Reuse. Small and large blocks are cached in separate pools. A request takes the smallest cached block of
// its pool that is >= its rounded size, if that block is not too big: at most 2x the rounded size for small
// blocks (wastes < 1 MiB), at most rounded size + 2 MiB for large ones (wastes one rounding step, never a
// large fraction of a big tensor). An exact-size block is thus always preferred. Otherwise cudaMalloc.
//
// Stream order. All allocations of a context are used on that context's single stream. A block is
// returned to the cache as soon as its tensor dies on the host, possibly while queued kernels still read
// or write it; the next user of the block is work queued later on the same stream, which the stream runs
// after those kernels, so this is safe (PyTorch's caching allocator has the same semantics). Memory used on
// ANOTHER stream (e.g. a communication stream) must be kept alive by the caller until that stream's work
// is done (record an event and make the context stream wait on it before freeing).
//
// Out of memory. When cudaMalloc fails, every cached block is released (after a device synchronize) and
// the call is retried once; if that fails too, coat::OutOfMemory is thrown with the request, its category,
// the memory report table and a HINT.
//
// Direct mode (AllocatorMode::Direct; COAT_CUDA_ALLOCATOR=direct for the contexts a program makes): no
// cache and no rounding: each request is its own cudaMalloc of exactly its size and each deallocate a
// cudaFree (which waits for the device). Slow; for finding memory errors: compute-sanitizer memcheck
// (with --padding) then sees every write past a tensor's end and every use of a freed tensor, which a
// reused cached block hides.
//
// Statistics (MemoryReport): per category, current/peak bytes of the blocks handed out (the rounded size,
// or the reused block's size when a slightly larger block was reused); reserved bytes = everything held
// from cudaMalloc (handed out + cached), current/peak; counts of cudaMalloc and cudaFree calls.
#pragma once

#include <cstddef>
#include <map>
#include <mutex>
#include <unordered_map>

#include "coat/core/allocator.h"
#include "coat/core/memory_stats.h"

namespace coat::cuda {

enum class AllocatorMode { Caching, Direct };

/// The mode named by the environment variable COAT_CUDA_ALLOCATOR: unset or "caching" -> Caching,
/// "direct" -> Direct; anything else throws InvalidArgument naming the variable and the accepted values.
AllocatorMode allocator_mode_from_environment();

class CachingAllocator final : public coat::Allocator {
 public:
  static constexpr size_t kSmallRoundBytes = 512;
  static constexpr size_t kSmallLimitBytes = size_t{1} << 20;  // requests <= this are "small"
  static constexpr size_t kLargeRoundBytes = size_t{2} << 20;

  /// An allocator for CUDA device `device` (made current around each cudaMalloc/cudaFree).
  explicit CachingAllocator(int device, AllocatorMode mode = AllocatorMode::Caching);
  /// Frees every block it holds, cached or still handed out (after a device synchronize).
  ~CachingAllocator() override;
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  void* allocate(size_t bytes, MemoryCategory category) override;
  void deallocate(void* ptr, size_t bytes, MemoryCategory category) override;
  /// Synchronizes the device and cudaFrees every cached (unused) block.
  void release_cached() override;
  MemoryReport memory_report() const override { return stats_.report(); }
  void reset_peaks() override { stats_.reset_peaks(); }

  int device() const { return device_; }
  AllocatorMode mode() const { return mode_; }
  /// Bytes held in cached (free) blocks.
  size_t cached_bytes() const;
  /// Number of cached (free) blocks.
  size_t cached_blocks() const;
  /// The size a request of `bytes` is rounded up to (see the file comment).
  static size_t round_size(size_t bytes);

 private:
  struct Block {
    size_t bytes = 0;
    MemoryCategory category = MemoryCategory::Other;
  };
  using FreePool = std::multimap<size_t, void*>;  // block size -> address

  /// A cached block fitting `rounded` (see the reuse rule), removed from its pool; nullptr if none.
  void* take_cached_locked(size_t rounded, size_t* block_bytes);
  void* system_allocate_locked(size_t rounded, size_t requested, MemoryCategory category);
  void release_cached_locked();

  int device_ = 0;
  AllocatorMode mode_ = AllocatorMode::Caching;
  mutable std::mutex mutex_;
  FreePool free_small_;
  FreePool free_large_;
  size_t cached_bytes_ = 0;
  std::unordered_map<void*, Block> active_;  // handed-out blocks
  MemoryStats stats_;
};

}  // namespace coat::cuda
