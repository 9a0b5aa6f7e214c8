// Reductions: validation here, kernels in the backends.
#include "coat/ops/reduce.h"

#include "coat/backend/cpu/elementwise.h"
#include "coat/backend/cpu/quantize.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/dispatch.h"
#ifdef COAT_WITH_CUDA
#include "coat/backend/cuda/elementwise.h"
#include "coat/backend/cuda/quantize.h"
#endif

namespace coat::ops {
namespace {

void check_float_input(const Tensor& x, std::string_view op) {
  COAT_ARG_CHECK(x.defined(), op, "undefined tensor");
  COAT_ARG_CHECK(is_floating(x.dtype()) && !is_fp8(x.dtype()), op, "dtype ", dtype_name(x.dtype()),
                 " not supported; expected f32, f64, bf16 or f16");
}

DType accumulator_dtype(const Tensor& x) { return x.dtype() == DType::F64 ? DType::F64 : DType::F32; }

}  // namespace

Tensor sum(const Tensor& x) {
  check_float_input(x, "sum");
  const Tensor cx = contiguous(x);
  Tensor out = Tensor::empty(x.context(), {1}, accumulator_dtype(x));
  COAT_DISPATCH("sum", x.device(), cpu::sum(cx, out), cuda::sum(cx, out));
  return out;
}

Tensor sum_last_dim(const Tensor& x) {
  check_float_input(x, "sum_last_dim");
  COAT_ARG_CHECK(x.dim() >= 1, "sum_last_dim", "needs at least one dimension");
  Shape out_shape(x.shape().begin(), x.shape().end() - 1);
  if (x.size(-1) == 0) return zeros(x.context(), out_shape, accumulator_dtype(x));
  const Tensor cx = contiguous(x);
  Tensor out = Tensor::empty(x.context(), out_shape, accumulator_dtype(x));
  COAT_DISPATCH("sum_last_dim", x.device(), cpu::sum_last_dim(cx, out), cuda::sum_last_dim(cx, out));
  return out;
}

Tensor amax(const Tensor& x) {
  check_float_input(x, "amax");
  const Tensor cx = contiguous(x);
  Tensor out = Tensor::empty(x.context(), {1}, DType::F32, MemoryCategory::Workspace);
  COAT_DISPATCH("amax", x.device(), cpu::tensor_amax(cx, out), cuda::tensor_amax(cx, out));
  return out;
}

Tensor group_amax(const Tensor& x, int64_t group_size) {
  check_float_input(x, "group_amax");
  COAT_ARG_CHECK(x.dim() >= 1, "group_amax", "needs at least one dimension");
  COAT_ARG_CHECK(group_size > 0 && x.size(-1) % group_size == 0, "group_amax", "last dimension ", x.size(-1),
                 " of ", shape_str(x.shape()), " is not a multiple of the group size ", group_size);
  const Tensor cx = contiguous(x);
  Shape out_shape = x.shape();
  out_shape.back() /= group_size;
  Tensor out = Tensor::empty(x.context(), out_shape, DType::F32, MemoryCategory::Workspace);
  COAT_DISPATCH("group_amax", x.device(), cpu::group_amax(cx, group_size, out),
                cuda::group_amax(cx, group_size, out));
  return out;
}

}  // namespace coat::ops
