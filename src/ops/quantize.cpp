// FP8 quantization primitives: validation and output allocation here, kernels in the backends.
#include "coat/ops/quantize.h"

#include "coat/backend/cpu/elementwise.h"
#include "coat/backend/cpu/quantize.h"
#include "coat/ops/copy.h"
#include "coat/ops/dispatch.h"
#include "coat/ops/reduce.h"
#ifdef COAT_WITH_CUDA
#include "coat/backend/cuda/elementwise.h"
#include "coat/backend/cuda/quantize.h"
#endif

namespace coat::ops {
namespace {

void check_input(const Tensor& x, DType fmt, std::string_view op) {
  COAT_ARG_CHECK(x.defined(), op, "undefined tensor");
  COAT_ARG_CHECK(x.dtype() == DType::F32 || x.dtype() == DType::BF16 || x.dtype() == DType::F16, op,
                 "input dtype ", dtype_name(x.dtype()), " not supported; expected f32, bf16 or f16");
  COAT_ARG_CHECK(is_fp8(fmt), op, "format ", dtype_name(fmt), " is not an FP8 format (e4m3 or e5m2)");
}

void check_output_dtype(DType out_dtype, std::string_view op) {
  COAT_ARG_CHECK(out_dtype == DType::F32 || out_dtype == DType::BF16, op, "output dtype ",
                 dtype_name(out_dtype), " not supported; expected f32 or bf16");
}

}  // namespace

namespace {

/// The codes (and transpose) of x with a given scale; scale_inv as given (defined) or 1 / scale.
Fp8PerTensor quantize_with(const Tensor& x, DType fmt, const Tensor& scale, Tensor scale_inv, bool with_transpose,
                           Fp8Saturation sat, MemoryCategory category) {
  COAT_ARG_CHECK(scale.defined() && scale.numel() == 1 && scale.dtype() == DType::F32 &&
                     scale.device() == x.device(),
                 "quantize_per_tensor", "scale must be a one-element f32 tensor on ", x.device().str());
  COAT_ARG_CHECK(!with_transpose || x.dim() == 2, "quantize_per_tensor", "the transposed copy needs a 2-D input, got ",
                 shape_str(x.shape()));
  const Tensor cx = contiguous(x);
  Fp8PerTensor q;
  q.scale = scale;
  const Device d = x.device();
  if (scale_inv.defined()) {
    q.scale_inv = std::move(scale_inv);
  } else {
    q.scale_inv = Tensor::empty(x.context(), {1}, DType::F32, category);
    // 1/scale rounded once from double equals the float division compute_scale does (division is
    // correctly rounded either way), so both paths give the same scale_inv.
    COAT_DISPATCH("quantize_per_tensor", d, cpu::reciprocal(scale, q.scale_inv), cuda::reciprocal(scale, q.scale_inv));
  }
  q.codes = Tensor::empty(x.context(), x.shape(), fmt, category);
  if (with_transpose) {
    q.codes_t = Tensor::empty(x.context(), {x.size(1), x.size(0)}, fmt, category);
    COAT_DISPATCH("quantize_transpose_per_tensor", d,
                  cpu::quantize_transpose_per_tensor(cx, scale, sat, q.codes, q.codes_t),
                  cuda::quantize_transpose_per_tensor(cx, scale, sat, q.codes, q.codes_t));
  } else {
    COAT_DISPATCH("quantize_per_tensor", d, cpu::quantize_per_tensor(cx, scale, sat, q.codes),
                  cuda::quantize_per_tensor(cx, scale, sat, q.codes));
  }
  return q;
}

}  // namespace

Fp8PerTensor quantize_per_tensor_with_scale(const Tensor& x, DType fmt, const Tensor& scale, bool with_transpose,
                                            Fp8Saturation sat, MemoryCategory category) {
  check_input(x, fmt, "quantize_per_tensor");
  return quantize_with(x, fmt, scale, Tensor(), with_transpose, sat, category);
}

Fp8PerTensor quantize_per_tensor(const Tensor& x, DType fmt, bool with_transpose, Fp8Saturation sat,
                                 MemoryCategory category) {
  check_input(x, fmt, "quantize_per_tensor");
  Tensor scale = Tensor::empty(x.context(), {1}, DType::F32, category);
  Tensor scale_inv = Tensor::empty(x.context(), {1}, DType::F32, category);
  {
    const Tensor max_abs = amax(x);
    COAT_DISPATCH("compute_scale", x.device(), cpu::compute_scale(max_abs, fmt, scale, scale_inv),
                  cuda::compute_scale(max_abs, fmt, scale, scale_inv));
  }
  return quantize_with(x, fmt, scale, std::move(scale_inv), with_transpose, sat, category);
}

Fp8PerTensor quantize_per_tensor_from_row_maxima(const Tensor& x, Tensor row_maxima, DType fmt,
                                                 bool with_transpose, Fp8Saturation sat, MemoryCategory category) {
  constexpr const char* op = "quantize_per_tensor_from_row_maxima";
  check_input(x, fmt, op);
  COAT_ARG_CHECK(row_maxima.defined() && row_maxima.dtype() == DType::F32, op,
                 "row_maxima must be an f32 tensor, got ", row_maxima.defined() ? row_maxima.str() : "undefined");
  COAT_ARG_CHECK(row_maxima.device() == x.device(), op, "row_maxima is on ", row_maxima.device().str(),
                 " but x is on ", x.device().str());
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) rows *= x.size(d);
  COAT_ARG_CHECK(row_maxima.numel() == rows, op, "row_maxima ", shape_str(row_maxima.shape()), " holds ",
                 row_maxima.numel(), " values; x ", shape_str(x.shape()), " has ", rows, " rows");
  Tensor scale = Tensor::empty(x.context(), {1}, DType::F32, category);
  Tensor scale_inv = Tensor::empty(x.context(), {1}, DType::F32, category);
  {
    const Tensor maxima = contiguous(row_maxima);
    COAT_DISPATCH("compute_scale_from_maxima", x.device(),
                  cpu::compute_scale_from_maxima(maxima, fmt, scale, scale_inv),
                  cuda::compute_scale_from_maxima(maxima, fmt, scale, scale_inv));
    row_maxima = Tensor();  // the caller's, when moved in: no longer needed
  }
  return quantize_with(x, fmt, scale, std::move(scale_inv), with_transpose, sat, category);
}

Fp8PerTensor quantize_per_tensor_from_maxima(const Tensor& x, const Tensor& maxima, DType fmt, bool with_transpose,
                                             Fp8Saturation sat, MemoryCategory category) {
  constexpr const char* op = "quantize_per_tensor_from_maxima";
  check_input(x, fmt, op);
  COAT_ARG_CHECK(maxima.defined() && maxima.device() == x.device(), op, "maxima must be on ", x.device().str(),
                 ", got ", maxima.defined() ? maxima.str() : "undefined");
  auto [scale, scale_inv] = fp8_scale_from_maxima(maxima, fmt, category);
  return quantize_with(x, fmt, scale, std::move(scale_inv), with_transpose, sat, category);
}

std::pair<Tensor, Tensor> fp8_scale_from_maxima(const Tensor& maxima, DType fmt, MemoryCategory category) {
  COAT_ARG_CHECK(maxima.defined() && maxima.dtype() == DType::F32 && maxima.numel() >= 1, "fp8_scale_from_maxima",
                 "maxima must be a non-empty f32 tensor, got ", maxima.defined() ? maxima.str() : "undefined");
  COAT_ARG_CHECK(is_fp8(fmt), "fp8_scale_from_maxima", "format ", dtype_name(fmt), " is not an FP8 format");
  Tensor scale = Tensor::empty(maxima.context(), {1}, DType::F32, category);
  Tensor scale_inv = Tensor::empty(maxima.context(), {1}, DType::F32, category);
  const Tensor m = contiguous(maxima);
  COAT_DISPATCH("compute_scale_from_maxima", m.device(), cpu::compute_scale_from_maxima(m, fmt, scale, scale_inv),
                cuda::compute_scale_from_maxima(m, fmt, scale, scale_inv));
  return {scale, scale_inv};
}

Tensor dequantize(const Fp8PerTensor& q, DType out_dtype) {
  check_output_dtype(out_dtype, "dequantize_per_tensor");
  Tensor out = Tensor::empty(q.codes.context(), q.codes.shape(), out_dtype);
  COAT_DISPATCH("dequantize_per_tensor", out.device(), cpu::dequantize_per_tensor(q.codes, q.scale_inv, out),
                cuda::dequantize_per_tensor(q.codes, q.scale_inv, out));
  return out;
}

Fp8PerGroup quantize_per_group(const Tensor& x, int64_t group_size, DType fmt, Fp8Saturation sat) {
  check_input(x, fmt, "quantize_per_group");
  COAT_ARG_CHECK(x.dim() >= 1 && group_size > 0 && x.size(-1) % group_size == 0, "quantize_per_group",
                 "last dimension of ", shape_str(x.shape()), " is not a multiple of the group size ", group_size);
  const Tensor cx = contiguous(x);
  Fp8PerGroup q;
  q.group_size = group_size;
  q.codes = Tensor::empty(x.context(), x.shape(), fmt);
  Shape scale_shape = x.shape();
  scale_shape.back() /= group_size;
  q.scale_inv = Tensor::empty(x.context(), scale_shape, DType::F32);
  COAT_DISPATCH("quantize_per_group", x.device(), cpu::quantize_per_group(cx, group_size, sat, q.codes, q.scale_inv),
                cuda::quantize_per_group(cx, group_size, sat, q.codes, q.scale_inv));
  return q;
}

Tensor dequantize(const Fp8PerGroup& q, DType out_dtype) {
  check_output_dtype(out_dtype, "dequantize_per_group");
  Tensor out = Tensor::empty(q.codes.context(), q.codes.shape(), out_dtype);
  COAT_DISPATCH("dequantize_per_group", out.device(),
                cpu::dequantize_per_group(q.codes, q.scale_inv, q.group_size, out),
                cuda::dequantize_per_group(q.codes, q.scale_inv, q.group_size, out));
  return out;
}

}  // namespace coat::ops
