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

}  // namespace coat::ops
