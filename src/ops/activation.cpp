// SwiGLU gating: validation here, kernels in the backends.
#include "coat/ops/activation.h"

#include "coat/backend/cpu/activation.h"
#include "coat/ops/copy.h"
#include "coat/ops/dispatch.h"
#ifdef COAT_WITH_CUDA
#include "coat/backend/cuda/activation.h"
#endif

namespace coat::ops {
namespace {

void check_operand(const Tensor& t, const Tensor& gate, const char* op, const char* name) {
  COAT_ARG_CHECK(t.defined(), op, name, " is undefined");
  COAT_ARG_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::F64 || t.dtype() == DType::BF16, op, name,
                 " has dtype ", dtype_name(t.dtype()), "; expected f32, f64 or bf16");
  COAT_ARG_CHECK(t.shape() == gate.shape(), op, name, " has shape ", shape_str(t.shape()), " but gate has ",
                 shape_str(gate.shape()));
  COAT_ARG_CHECK(t.dtype() == gate.dtype(), op, name, " has dtype ", dtype_name(t.dtype()), " but gate has ",
                 dtype_name(gate.dtype()));
  COAT_ARG_CHECK(t.device() == gate.device(), op, name, " is on ", t.device().str(), " but gate is on ",
                 gate.device().str());
}

}  // namespace

Tensor swiglu(const Tensor& gate, const Tensor& up) {
  COAT_ARG_CHECK(gate.defined(), "swiglu", "gate is undefined");
  check_operand(gate, gate, "swiglu", "gate");
  check_operand(up, gate, "swiglu", "up");
  const Tensor cg = contiguous(gate), cu = contiguous(up);
  Tensor y = Tensor::empty(gate.context(), gate.shape(), gate.dtype());
  COAT_DISPATCH("swiglu", gate.device(), cpu::swiglu(cg, cu, y),
                cuda::swiglu(cg, cu, y));
  return y;
}

SwigluGrads swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up) {
  COAT_ARG_CHECK(gate.defined(), "swiglu_backward", "gate is undefined");
  check_operand(gate, gate, "swiglu_backward", "gate");
  check_operand(up, gate, "swiglu_backward", "up");
  check_operand(dy, gate, "swiglu_backward", "dy");
  const Tensor cd = contiguous(dy), cg = contiguous(gate), cu = contiguous(up);
  SwigluGrads grads;
  grads.dgate = Tensor::empty(gate.context(), gate.shape(), gate.dtype());
  grads.dup = Tensor::empty(gate.context(), gate.shape(), gate.dtype());
  COAT_DISPATCH("swiglu_backward", gate.device(), cpu::swiglu_backward(cd, cg, cu, grads.dgate, grads.dup),
                cuda::swiglu_backward(cd, cg, cu, grads.dgate, grads.dup));
  return grads;
}

}  // namespace coat::ops
