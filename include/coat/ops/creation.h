// Device-agnostic tensor factories and fills: constant, arange, and counter-based random fills.
#pragma once

#include "coat/core/random_generator.h"
#include "coat/core/tensor.h"

namespace coat::ops {

Tensor zeros(const ContextPtr& context, const Shape& shape, DType dtype,
             MemoryCategory category = MemoryCategory::Activations);
Tensor full(const ContextPtr& context, const Shape& shape, double value, DType dtype,
            MemoryCategory category = MemoryCategory::Activations);
/// [start, start + step, ...) with `count` elements.
Tensor arange(const ContextPtr& context, int64_t count, DType dtype, double start = 0.0, double step = 1.0);

/// Every element of t (any strides) set to value.
void fill_(Tensor& t, double value);
/// Uniform in [low, high) / normal(mean, std) from Philox(generator.seed, generator.offset + i); the
/// generator's offset advances by t.numel(). t must be contiguous with a float dtype. Identical bits on
/// every device.
void uniform_(Tensor& t, RandomGenerator& generator, float low = 0.0f, float high = 1.0f);
void normal_(Tensor& t, RandomGenerator& generator, float mean = 0.0f, float std = 1.0f);

}  // namespace coat::ops
