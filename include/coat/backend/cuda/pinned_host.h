// Page-locked (pinned) host memory and a CPU context that allocates it: device-to-host copies into it run at
// the DMA engines' full speed (pageable memory goes through a driver staging buffer at a fraction of it).
// The asynchronous checkpoint copies a rank's state into such buffers (train/async_saver.h). Tensors of this
// context are CPU tensors: every CPU op works on them. Plain C++ (no kernels).
#pragma once

#include <cstddef>

#include "coat/core/allocator.h"
#include "coat/core/context.h"
#include "coat/core/memory_stats.h"

namespace coat::cuda {

/// Registered anonymous pages (portable: usable with every device; see pinned_host.cpp for why not
/// cudaHostAlloc), counted by category; nothing cached
/// (pinning is slow: the callers keep their buffers for the run).
class PinnedHostAllocator final : public coat::Allocator {
 public:
  void* allocate(size_t bytes, MemoryCategory category) override;
  void deallocate(void* ptr, size_t bytes, MemoryCategory category) override;
  MemoryReport memory_report() const override { return stats_.report(); }
  void reset_peaks() override { stats_.reset_peaks(); }

 private:
  MemoryStats stats_;
};

class PinnedHostContext final : public coat::DeviceContext {
 public:
  Device device() const override { return Device::cpu(); }
  Allocator& allocator() override { return allocator_; }
  void synchronize() override {}

 private:
  PinnedHostAllocator allocator_;
};

}  // namespace coat::cuda
