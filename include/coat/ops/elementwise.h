// Device-agnostic element-wise arithmetic on float tensors of one shape and dtype.
#pragma once

#include "coat/core/tensor.h"

namespace coat::ops {

Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& a, double factor);
/// In place: a <- a + b, a <- a * b, a <- a * factor (a contiguous).
void add_(Tensor& a, const Tensor& b);
void mul_(Tensor& a, const Tensor& b);
void scale_(Tensor& a, double factor);

}  // namespace coat::ops
