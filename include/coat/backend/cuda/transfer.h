// Copies of contiguous bytes between the host and CUDA devices, and between CUDA devices.
#pragma once

#include "coat/core/tensor.h"

namespace coat::cuda {

/// src on a CUDA device, dst on the CPU, same dtype and element count, both contiguous. Returns when the
/// bytes have arrived.
void copy_device_to_host(const Tensor& src, Tensor& dst);
/// src on the CPU, dst on a CUDA device. Returns when the host buffer may be reused.
void copy_host_to_device(const Tensor& src, Tensor& dst);
/// Between two CUDA devices (or within one); ordered after the work queued on both contexts.
void copy_device_to_device(const Tensor& src, Tensor& dst);

}  // namespace coat::cuda
