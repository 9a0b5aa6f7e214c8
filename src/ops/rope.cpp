// Rotary position embedding: validation here, kernels in the backends.
#include "coat/ops/rope.h"

#include <cmath>

#include "coat/backend/cpu/rope.h"
#include "coat/ops/copy.h"
#include "coat/ops/dispatch.h"
#ifdef COAT_WITH_CUDA
#include "coat/backend/cuda/rope.h"
#endif

namespace coat::ops {
namespace {

/// Validates the arguments; returns the number of rotated heads.
int64_t check_rope(const Tensor& x, double theta, int64_t position_offset,
                   std::optional<int64_t> rotary_heads) {
  COAT_ARG_CHECK(x.defined(), "rope", "x is undefined");
  COAT_ARG_CHECK(x.dtype() == DType::F32 || x.dtype() == DType::F64 || x.dtype() == DType::BF16, "rope",
                 "x has dtype ", dtype_name(x.dtype()), "; expected f32, f64 or bf16");
  COAT_ARG_CHECK(x.dim() == 4, "rope", "x has shape ", shape_str(x.shape()), "; expected [B, T, H, Dh]");
  COAT_ARG_CHECK(x.size(3) > 0 && x.size(3) % 2 == 0, "rope", "head dimension ", x.size(3), " of x ",
                 shape_str(x.shape()), " must be even and positive");
  COAT_ARG_CHECK(std::isfinite(theta) && theta > 0.0, "rope", "theta ", theta, " must be finite and > 0");
  COAT_ARG_CHECK(position_offset >= 0, "rope", "position_offset ", position_offset, " must be >= 0");
  const int64_t rotary = rotary_heads.value_or(x.size(2));
  COAT_ARG_CHECK(rotary >= 0 && rotary <= x.size(2), "rope", "rotary_heads ", rotary, " must lie in [0, ",
                 x.size(2), "] for x ", shape_str(x.shape()));
  return rotary;
}

}  // namespace

Tensor rope(const Tensor& x, double theta, int64_t position_offset, bool inverse,
            std::optional<int64_t> rotary_heads) {
  const int64_t rotary = check_rope(x, theta, position_offset, rotary_heads);
  const Tensor cx = contiguous(x);
  Tensor y = Tensor::empty(x.context(), x.shape(), x.dtype());
  COAT_DISPATCH("rope", x.device(), cpu::rope(cx, theta, position_offset, inverse, rotary, y),
                cuda::rope(cx, theta, position_offset, inverse, rotary, y));
  return y;
}

void rope_(Tensor& x, double theta, int64_t position_offset, bool inverse,
           std::optional<int64_t> rotary_heads) {
  const int64_t rotary = check_rope(x, theta, position_offset, rotary_heads);
  if (!x.is_contiguous()) {
    copy_(x, rope(x, theta, position_offset, inverse, rotary));
    return;
  }
  COAT_DISPATCH("rope_", x.device(), cpu::rope(x, theta, position_offset, inverse, rotary, x),
                cuda::rope(x, theta, position_offset, inverse, rotary, x));
}

}  // namespace coat::ops
