// Dispatch of a device-agnostic op to its backend, and the error for a missing kernel.
#pragma once

#include <string_view>

#include "coat/core/device.h"
#include "coat/core/error.h"

namespace coat::ops {

[[noreturn]] void throw_no_kernel(std::string_view op, Device device);

}  // namespace coat::ops

/// COAT_DISPATCH("op", device, cpu::fn(args...), cuda::fn(args...)): runs the call for the device's
/// backend; without a CUDA backend the CUDA branch becomes a NotImplemented error naming the op.
#ifdef COAT_WITH_CUDA
#define COAT_DISPATCH(op, device, cpu_call, cuda_call) \
  do {                                                 \
    if ((device).is_cpu()) {                           \
      cpu_call;                                        \
    } else {                                           \
      cuda_call;                                       \
    }                                                  \
  } while (0)
#else
#define COAT_DISPATCH(op, device, cpu_call, cuda_call)  \
  do {                                                  \
    if ((device).is_cpu()) {                            \
      cpu_call;                                         \
    } else {                                            \
      ::coat::ops::throw_no_kernel(op, device);         \
    }                                                   \
  } while (0)
#endif
