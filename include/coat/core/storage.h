// Storage: a block of device or host memory shared by tensors (views share one storage).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

#include "coat/core/context.h"

namespace coat {

class Storage {
 public:
  /// Allocates `bytes` from the context's allocator under `category`.
  Storage(ContextPtr context, size_t bytes, MemoryCategory category);
  /// Wraps memory owned elsewhere (e.g. a memory-mapped file); `release` runs when the storage dies.
  Storage(ContextPtr context, void* data, size_t bytes, std::function<void(void*)> release);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  MemoryCategory category() const { return category_; }
  Device device() const { return context_->device(); }
  const ContextPtr& context() const { return context_; }

 private:
  ContextPtr context_;
  void* data_ = nullptr;
  size_t bytes_ = 0;
  MemoryCategory category_ = MemoryCategory::Other;
  std::function<void(void*)> release_;
};

}  // namespace coat
