// Fused residual add + FP8 group quantisation: validation and outputs here, kernels in the backends.
#include "coat/ops/add_quantize.h"

#include "coat/backend/cpu/add_quantize.h"
#include "coat/ops/copy.h"
#include "coat/ops/dispatch.h"
#ifdef COAT_WITH_CUDA
#include "coat/backend/cuda/add_quantize.h"
#endif

namespace coat::ops {

SumAndGroups add_quantize_per_group(const Tensor& a, const Tensor& b, int64_t group_size, DType fmt,
                                    Fp8Saturation sat) {
  constexpr const char* op = "add_quantize_per_group";
  COAT_ARG_CHECK(a.defined() && b.defined(), op, "undefined tensor");
  COAT_ARG_CHECK(a.dtype() == DType::F32 || a.dtype() == DType::BF16 || a.dtype() == DType::F16, op, "dtype ",
                 dtype_name(a.dtype()), " not supported; expected f32, bf16 or f16");
  COAT_ARG_CHECK(a.shape() == b.shape(), op, "shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()),
                 " do not match");
  COAT_ARG_CHECK(a.dtype() == b.dtype(), op, "dtypes ", dtype_name(a.dtype()), " and ", dtype_name(b.dtype()),
                 " differ; cast one first");
  COAT_ARG_CHECK(a.device() == b.device(), op, "tensors on ", a.device().str(), " and ", b.device().str());
  COAT_ARG_CHECK(is_fp8(fmt), op, "format ", dtype_name(fmt), " is not an FP8 format (e4m3 or e5m2)");
  COAT_ARG_CHECK(a.dim() >= 1 && group_size > 0 && a.size(-1) % group_size == 0, op, "last dimension of ",
                 shape_str(a.shape()), " is not a multiple of the group size ", group_size);
  const Tensor ca = contiguous(a), cb = contiguous(b);
  SumAndGroups out;
  out.sum = Tensor::empty(a.context(), a.shape(), a.dtype());
  out.groups.group_size = group_size;
  out.groups.codes = Tensor::empty(a.context(), a.shape(), fmt);
  Shape scale_shape = a.shape();
  scale_shape.back() /= group_size;
  out.groups.scale_inv = Tensor::empty(a.context(), scale_shape, DType::F32);
  COAT_DISPATCH(op, a.device(),
                cpu::add_quantize_per_group(ca, cb, group_size, sat, out.sum, out.groups.codes,
                                            out.groups.scale_inv),
                cuda::add_quantize_per_group(ca, cb, group_size, sat, out.sum, out.groups.codes,
                                             out.groups.scale_inv));
  return out;
}

}  // namespace coat::ops
