// Bit-exact movement of tensor elements between host bytes and tensors on any device with any strides:
// what the checkpoint and safetensors writers and readers use, so that every dtype (FP8 and NaN payloads
// included) round-trips unchanged. Copies go through same-size integer views, never through a conversion.
#pragma once

#include <cstdint>

#include "coat/core/tensor.h"

namespace coat::io {

/// The integer dtype of dtype's width (U8, U16, U32, I64): a view as it moves the bytes unchanged.
DType bits_dtype(DType dtype);

/// A contiguous CPU tensor with t's elements in row-major order, bit for bit: t itself when it already is
/// one, else a copy made on `host` (a CPU context).
Tensor host_contiguous(const Tensor& t, const ContextPtr& host);

/// Copies dst.nbytes() bytes (dst's elements in row-major order, any alignment) from `bytes` into dst,
/// bit for bit, wherever dst lives and whatever its strides.
void copy_bytes_into(const uint8_t* bytes, Tensor& dst);

/// dst's elements become src's, bit for bit (same dtype and shape; any devices and strides): a host
/// snapshot of device state that must write the same bytes as the state itself.
void copy_bits(Tensor& dst, const Tensor& src);

}  // namespace coat::io
