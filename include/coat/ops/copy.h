// Device-agnostic copies: contiguous(), device transfers, dtype casts, in-place copies, host vectors.
#pragma once

#include <vector>

#include "coat/core/float_formats.h"
#include "coat/core/tensor.h"

namespace coat::ops {

/// t itself when already contiguous, else a contiguous copy on the same device.
Tensor contiguous(const Tensor& t);
/// A contiguous copy on the given context's device (same dtype and memory category).
Tensor to(const Tensor& t, const ContextPtr& context);
/// A contiguous copy converted to dtype (round to nearest even; FP8 saturating unless told otherwise).
Tensor cast(const Tensor& t, DType dtype, Fp8Saturation sat = Fp8Saturation::Saturate);
/// A contiguous copy with the same dtype and device.
Tensor clone(const Tensor& t);
/// dst <- src element-wise: same shape; any strides, dtypes and devices.
void copy_(Tensor& dst, const Tensor& src, Fp8Saturation sat = Fp8Saturation::Saturate);

/// A contiguous tensor of the given dtype on the context's device made from host values (converted).
Tensor from_vector(const ContextPtr& context, const Shape& shape, DType dtype, const std::vector<double>& values);
Tensor from_vector(const ContextPtr& context, const Shape& shape, DType dtype, const std::vector<float>& values);
/// All elements, in row-major order, converted to double (wherever the tensor lives).
std::vector<double> to_double_vector(const Tensor& t);
/// The raw bytes of the elements in row-major order (for exactness checks).
std::vector<uint8_t> to_bytes(const Tensor& t);

}  // namespace coat::ops
