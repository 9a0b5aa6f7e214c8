// Element-wise arithmetic: validation here, kernels in the backends.
#include "coat/ops/elementwise.h"

#include "coat/backend/cpu/elementwise.h"
#include "coat/ops/copy.h"
#include "coat/ops/dispatch.h"
#ifdef COAT_WITH_CUDA
#include "coat/backend/cuda/elementwise.h"
#endif

namespace coat::ops {
namespace {

bool is_arithmetic_dtype(DType t) {
  return t == DType::F32 || t == DType::F64 || t == DType::BF16 || t == DType::F16;
}

void check_operand(const Tensor& a, std::string_view op) {
  COAT_ARG_CHECK(a.defined(), op, "undefined tensor");
  COAT_ARG_CHECK(is_arithmetic_dtype(a.dtype()), op, "dtype ", dtype_name(a.dtype()),
                 " not supported; expected f32, f64, bf16 or f16");
}

void check_pair(const Tensor& a, const Tensor& b, std::string_view op) {
  check_operand(a, op);
  check_operand(b, op);
  COAT_ARG_CHECK(a.shape() == b.shape(), op, "shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()),
                 " do not match");
  COAT_ARG_CHECK(a.dtype() == b.dtype(), op, "dtypes ", dtype_name(a.dtype()), " and ", dtype_name(b.dtype()),
                 " differ; cast one first");
  COAT_ARG_CHECK(a.device() == b.device(), op, "tensors on ", a.device().str(), " and ", b.device().str());
}

void binary_into(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  const std::string_view name = binary_op_name(op);
  check_pair(a, b, name);
  const Tensor ca = contiguous(a), cb = contiguous(b);
  COAT_DISPATCH(name, out.device(), cpu::binary(op, ca, cb, out), cuda::binary(op, ca, cb, out));
}

Tensor binary_new(BinaryOp op, const Tensor& a, const Tensor& b) {
  check_operand(a, binary_op_name(op));
  Tensor out = Tensor::empty(a.context(), a.shape(), a.dtype());
  binary_into(op, a, b, out);
  return out;
}

void binary_in_place(BinaryOp op, Tensor& a, const Tensor& b) {
  COAT_ARG_CHECK(a.defined() && a.is_contiguous(), binary_op_name(op), "in-place target must be contiguous");
  binary_into(op, a, b, a);
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary_new(BinaryOp::Add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary_new(BinaryOp::Sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary_new(BinaryOp::Mul, a, b); }
void add_(Tensor& a, const Tensor& b) { binary_in_place(BinaryOp::Add, a, b); }
void mul_(Tensor& a, const Tensor& b) { binary_in_place(BinaryOp::Mul, a, b); }

Tensor scale(const Tensor& a, double factor) {
  check_operand(a, "scale");
  const Tensor ca = contiguous(a);
  Tensor out = Tensor::empty(a.context(), a.shape(), a.dtype());
  COAT_DISPATCH("scale", a.device(), cpu::scale(ca, factor, out), cuda::scale(ca, factor, out));
  return out;
}

void scale_(Tensor& a, double factor) {
  check_operand(a, "scale");
  COAT_ARG_CHECK(a.is_contiguous(), "scale", "in-place target must be contiguous");
  COAT_DISPATCH("scale", a.device(), cpu::scale(a, factor, a), cuda::scale(a, factor, a));
}

}  // namespace coat::ops
