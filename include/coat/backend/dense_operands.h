// Checks the matrix-product backends share: dense operands, overlapping memory, the FP8 GEMMs' output dtype.
#pragma once

#include "coat/core/error.h"
#include "coat/core/tensor.h"

namespace coat {

/// Contiguous, or empty (an empty tensor has no layout to get wrong, whatever its strides say).
inline bool is_dense(const Tensor& t) { return t.numel() == 0 || t.is_contiguous(); }

/// Whether the bytes of x and y overlap (an output must not alias an input).
inline bool ranges_overlap(const Tensor& x, const Tensor& y) {
  const auto* x0 = static_cast<const char*>(x.data_ptr());
  const auto* y0 = static_cast<const char*>(y.data_ptr());
  if (x.nbytes() == 0 || y.nbytes() == 0) return false;
  return x0 < y0 + y.nbytes() && y0 < x0 + x.nbytes();
}

/// The FP8 GEMMs (per-tensor and block-scaled, both backends) write BF16 or F32.
inline void check_fp8_gemm_output_dtype(const Tensor& out, const char* op) {
  COAT_ARG_CHECK(out.dtype() == DType::BF16 || out.dtype() == DType::F32, op, "output dtype ",
                 dtype_name(out.dtype()), " not supported; expected bf16 or f32");
}

}  // namespace coat
