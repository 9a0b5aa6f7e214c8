// Device-agnostic FP8 quantization primitives: per-tensor (optionally with the transposed copy that
// FP8 GEMMs need) and per 1xG group along the last dimension. Scales stay on the device.
#pragma once

#include <utility>

#include "coat/core/float_formats.h"
#include "coat/core/tensor.h"

namespace coat::ops {

/// codes = fp8(x * scale) with scale = fmt_max / amax(x) (1 when amax is 0); scale_inv = 1 / scale is the
/// dequantisation factor (what cuBLASLt takes). codes_t is the transpose of a 2-D input when requested.
struct Fp8PerTensor {
  Tensor codes;
  Tensor scale;      // F32 [1]
  Tensor scale_inv;  // F32 [1]
  Tensor codes_t;    // undefined unless requested

  /// codes_t as a GEMM operand: the transposed codes with these scales (its own codes_t undefined).
  Fp8PerTensor transposed() const { return {codes_t, scale, scale_inv, Tensor()}; }
};

/// Per group of group_size along the last dim: codes and one F32 scale_inv per group ([..., K/G]).
struct Fp8PerGroup {
  Tensor codes;
  Tensor scale_inv;
  int64_t group_size = 0;
};

/// `category`: where the codes, codes_t and scales are accounted (e.g. Weights for a model's FP8 weights).
Fp8PerTensor quantize_per_tensor(const Tensor& x, DType fmt, bool with_transpose = false,
                                 Fp8Saturation sat = Fp8Saturation::Saturate,
                                 MemoryCategory category = MemoryCategory::Activations);
/// The same with the tensor amax taken from the row maxima that x's producer wrote (ops::rmsnorm_forward,
/// layernorm_forward, swiglu_packed asked for them; COAT's group scaling): row_maxima is F32 [rows] with
/// max |x| of each row of x seen as [rows, x.size(-1)], NaN for a row holding a NaN. One small reduction of
/// the maxima replaces the pass over x; the bytes (codes, codes_t, scale, scale_inv) are those of
/// quantize_per_tensor(x) when the maxima are x's (the amax is a max: exact in any grouping). Taken by value:
/// moved in, the maxima are freed once the scale is made, before the codes are allocated.
Fp8PerTensor quantize_per_tensor_from_row_maxima(const Tensor& x, Tensor row_maxima, DType fmt,
                                                 bool with_transpose = false,
                                                 Fp8Saturation sat = Fp8Saturation::Saturate,
                                                 MemoryCategory category = MemoryCategory::Activations);
/// The same with the tensor amax the largest of `maxima` (F32, any count, on x's device): maxima of pieces that
/// together cover exactly x (the optimizer step's granule maxima of a weight, ops::adamw_step_quantized). The
/// bytes are quantize_per_tensor(x)'s when they are x's pieces' maxima.
Fp8PerTensor quantize_per_tensor_from_maxima(const Tensor& x, const Tensor& maxima, DType fmt,
                                             bool with_transpose = false,
                                             Fp8Saturation sat = Fp8Saturation::Saturate,
                                             MemoryCategory category = MemoryCategory::Activations);
/// The same with a given scale (F32 [1] on x's device), e.g. one computed from other maxima.
Fp8PerTensor quantize_per_tensor_with_scale(const Tensor& x, DType fmt, const Tensor& scale,
                                            bool with_transpose = false,
                                            Fp8Saturation sat = Fp8Saturation::Saturate,
                                            MemoryCategory category = MemoryCategory::Activations);
Tensor dequantize(const Fp8PerTensor& q, DType out_dtype = DType::F32);
/// The scale and scale_inv (F32 [1] each) that quantize_per_tensor takes for a tensor whose amax is the largest
/// of `maxima` (F32, any count): pieces of one tensor quantised apart (a sharded weight's slices, with the
/// maxima of every piece) get the codes the whole tensor would.
std::pair<Tensor, Tensor> fp8_scale_from_maxima(const Tensor& maxima, DType fmt,
                                                MemoryCategory category = MemoryCategory::Workspace);

Fp8PerGroup quantize_per_group(const Tensor& x, int64_t group_size, DType fmt,
                               Fp8Saturation sat = Fp8Saturation::Saturate);
Tensor dequantize(const Fp8PerGroup& q, DType out_dtype = DType::F32);

}  // namespace coat::ops
