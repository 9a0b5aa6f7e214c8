// Making device contexts: the entry point that gives a program its CPU or CUDA context.
#pragma once

#include <cstddef>

#include "coat/core/context.h"

namespace coat::ops {

/// Number of usable CUDA devices; 0 when the build has no CUDA backend or no device/driver is present.
int cuda_device_count();
/// Total memory of CUDA device `index` in bytes; 0 when the build has no CUDA backend or the device is not
/// there (never an exception).
size_t cuda_device_memory_bytes(int index);
/// A new context for the device. Throws NotImplemented for CUDA in a CPU-only build and InvalidArgument
/// for a device index that does not exist.
ContextPtr make_context(Device device);
/// A CPU context for host copies of `context`'s tensors that should move fast: `context` itself when it is a
/// CPU context (the copies then count in its allocator's report); for a CUDA device a new context of
/// page-locked (pinned) host memory (cuda/pinned_host.h: copied by DMA at full speed, counted in its own
/// allocator's report).
ContextPtr host_staging_context(const ContextPtr& context);

}  // namespace coat::ops
