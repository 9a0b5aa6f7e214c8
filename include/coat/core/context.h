// A device context: one per device in use. It owns that device's allocator and (in the CUDA backend)
// its stream, library handles and caches. Tensors keep their context alive through their storage, so
// ops reach the right stream and allocator from their inputs; nothing is global.
#pragma once

#include <memory>

#include "coat/core/allocator.h"
#include "coat/core/device.h"

namespace coat {

class DeviceContext : public std::enable_shared_from_this<DeviceContext> {
 public:
  virtual ~DeviceContext() = default;
  virtual Device device() const = 0;
  virtual Allocator& allocator() = 0;
  /// Waits until all work queued on this context is done.
  virtual void synchronize() = 0;
  /// Whether kernels that have a faster, run-to-run varying variant (cuDNN's attention backward, which adds
  /// dq with atomics) use their deterministic one: the same steps then give the same bits every time, which
  /// a bit-identical resume on a GPU needs (train.deterministic). Default false (the faster kernels).
  bool deterministic() const { return deterministic_; }
  void set_deterministic(bool on) { deterministic_ = on; }

 private:
  bool deterministic_ = false;
};

class CpuContext final : public DeviceContext {
 public:
  Device device() const override { return Device::cpu(); }
  Allocator& allocator() override { return allocator_; }
  void synchronize() override {}

 private:
  CpuAllocator allocator_;
};

using ContextPtr = std::shared_ptr<DeviceContext>;

}  // namespace coat
