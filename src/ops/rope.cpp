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

/// Validates x; returns its head dimension.
int64_t check_rope_input(const Tensor& x) {
  COAT_ARG_CHECK(x.defined(), "rope", "x is undefined");
  COAT_ARG_CHECK(x.dtype() == DType::F32 || x.dtype() == DType::F64 || x.dtype() == DType::BF16, "rope",
                 "x has dtype ", dtype_name(x.dtype()), "; expected f32, f64 or bf16");
  COAT_ARG_CHECK(x.dim() == 4, "rope", "x has shape ", shape_str(x.shape()), "; expected [B, T, H, Dh]");
  COAT_ARG_CHECK(x.size(3) > 0 && x.size(3) % 2 == 0, "rope", "head dimension ", x.size(3), " of x ",
                 shape_str(x.shape()), " must be even and positive");
  return x.size(3);
}

void check_theta(double theta) {
  COAT_ARG_CHECK(std::isfinite(theta) && theta > 0.0, "rope", "theta ", theta, " must be finite and > 0");
}

/// Validates the arguments; returns the number of rotated heads.
int64_t check_rope(const Tensor& x, std::span<const double> inv_freq, int64_t position_offset,
                   std::optional<int64_t> rotary_heads) {
  const int64_t dh = check_rope_input(x);
  COAT_ARG_CHECK(static_cast<int64_t>(inv_freq.size()) == dh / 2, "rope", "inv_freq has ", inv_freq.size(),
                 " values; x ", shape_str(x.shape()), " needs Dh/2 = ", dh / 2);
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    COAT_ARG_CHECK(std::isfinite(inv_freq[i]), "rope", "inv_freq[", i, "] = ", inv_freq[i], " is not finite");
  }
  COAT_ARG_CHECK(position_offset >= 0, "rope", "position_offset ", position_offset, " must be >= 0");
  const int64_t rotary = rotary_heads.value_or(x.size(2));
  COAT_ARG_CHECK(rotary >= 0 && rotary <= x.size(2), "rope", "rotary_heads ", rotary, " must lie in [0, ",
                 x.size(2), "] for x ", shape_str(x.shape()));
  return rotary;
}

}  // namespace

std::vector<double> rope_inverse_frequencies(double theta, int64_t head_dim) {
  check_theta(theta);
  COAT_ARG_CHECK(head_dim > 0 && head_dim % 2 == 0, "rope", "head dimension ", head_dim,
                 " must be even and positive");
  std::vector<double> inv_freq(static_cast<size_t>(head_dim / 2));
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    inv_freq[static_cast<size_t>(i)] =
        std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
  }
  return inv_freq;
}

Tensor rope(const Tensor& x, std::span<const double> inv_freq, int64_t position_offset, bool inverse,
            std::optional<int64_t> rotary_heads) {
  const int64_t rotary = check_rope(x, inv_freq, position_offset, rotary_heads);
  const Tensor cx = contiguous(x);
  Tensor y = Tensor::empty(x.context(), x.shape(), x.dtype());
  COAT_DISPATCH("rope", x.device(), cpu::rope(cx, inv_freq, position_offset, inverse, rotary, y),
                cuda::rope(cx, inv_freq, position_offset, inverse, rotary, y));
  return y;
}

Tensor rope(const Tensor& x, double theta, int64_t position_offset, bool inverse,
            std::optional<int64_t> rotary_heads) {
  check_theta(theta);
  return rope(x, rope_inverse_frequencies(theta, check_rope_input(x)), position_offset, inverse,
              rotary_heads);
}

void rope_(Tensor& x, std::span<const double> inv_freq, int64_t position_offset, bool inverse,
           std::optional<int64_t> rotary_heads, Tensor* row_max) {
  const int64_t rotary = check_rope(x, inv_freq, position_offset, rotary_heads);
  if (row_max != nullptr) {
    COAT_ARG_CHECK(x.dtype() == DType::F32 || x.dtype() == DType::BF16, "rope_", "row maxima are written for f32 and bf16 x, not ",
                   dtype_name(x.dtype()));
    *row_max = Tensor::empty(x.context(), {x.size(0) * x.size(1)}, DType::F32);
  }
  if (!x.is_contiguous()) {
    Tensor cx = contiguous(x);
    rope_(cx, inv_freq, position_offset, inverse, rotary, row_max);
    copy_(x, cx);
    return;
  }
  COAT_DISPATCH("rope_", x.device(), cpu::rope(x, inv_freq, position_offset, inverse, rotary, x, row_max),
                cuda::rope(x, inv_freq, position_offset, inverse, rotary, x, row_max));
}

void rope_(Tensor& x, double theta, int64_t position_offset, bool inverse,
           std::optional<int64_t> rotary_heads) {
  check_theta(theta);
  rope_(x, rope_inverse_frequencies(theta, check_rope_input(x)), position_offset, inverse, rotary_heads);
}

}  // namespace coat::ops
