// SwiGLU gating: validation here, kernels in the backends.
#include "coat/ops/activation.h"

#include "coat/backend/cpu/activation.h"
#include "coat/ops/copy.h"
#include "coat/ops/dispatch.h"
#include "coat/ops/quantize.h"
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

/// cuda::swiglu_packed_compress where CUDA is built; false (nothing written) otherwise.
bool fused_swiglu_compress(const Tensor& gu, Tensor& y, Tensor& row_max, Tensor& codes, Tensor& scale_inv) {
#ifdef COAT_WITH_CUDA
  return cuda::swiglu_packed_compress(gu, y, row_max, codes, scale_inv);
#else
  (void)gu, (void)y, (void)row_max, (void)codes, (void)scale_inv;
  return false;
#endif
}

/// F of a packed gate/up tensor [..., 2F].
int64_t packed_half(const Tensor& gu, const char* op) {
  COAT_ARG_CHECK(gu.defined(), op, "gu is undefined");
  check_operand(gu, gu, op, "gu");
  COAT_ARG_CHECK(gu.dim() >= 1 && gu.size(-1) % 2 == 0, op, "gu has shape ", shape_str(gu.shape()),
                 "; expected [..., 2F] (gate and up side by side)");
  return gu.size(-1) / 2;
}

Shape with_last(Shape shape, int64_t last) {
  shape.back() = last;
  return shape;
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

/// F32 [rows of out] for an op's row maxima (f32 and bf16 outputs only: what FP8 quantisation reads).
Tensor row_maxima_for(const Tensor& out, const char* op) {
  COAT_ARG_CHECK(out.dtype() == DType::F32 || out.dtype() == DType::BF16, op,
                 "row maxima are written for f32 and bf16 outputs (what FP8 quantisation reads), not ",
                 dtype_name(out.dtype()));
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < out.dim(); ++d) rows *= out.size(d);
  return Tensor::empty(out.context(), {rows}, DType::F32);
}

Tensor swiglu_packed(const Tensor& gu, Tensor* row_max, Fp8PerGroup* gu_compressed) {
  const int64_t f = packed_half(gu, "swiglu_packed");
  const Tensor cg = contiguous(gu);
  Tensor y = Tensor::empty(gu.context(), with_last(gu.shape(), f), gu.dtype());
  if (row_max != nullptr) *row_max = row_maxima_for(y, "swiglu_packed");
  if (gu_compressed != nullptr) {
    COAT_ARG_CHECK(f % 16 == 0, "swiglu_packed", "gu's compressed copy needs F (", f, ") a multiple of 16");
    // CUDA: one kernel writes y, its row maxima and the copy. Elsewhere, or where that kernel does not
    // apply, the copy is quantize_per_group's own pass: the same bytes either way.
    if (gu.device().is_cuda() && (gu.dtype() == DType::F32 || gu.dtype() == DType::BF16) && y.numel() > 0) {
      Fp8PerGroup q;
      q.codes = Tensor::empty(gu.context(), gu.shape(), DType::E4M3);
      q.scale_inv = Tensor::empty(gu.context(), with_last(gu.shape(), 2 * f / 16), DType::F32);
      q.group_size = 16;
      Tensor maxima = row_max != nullptr ? *row_max : row_maxima_for(y, "swiglu_packed");
      if (fused_swiglu_compress(cg, y, maxima, q.codes, q.scale_inv)) {
        *gu_compressed = std::move(q);
        return y;
      }
    }
    *gu_compressed = quantize_per_group(cg, 16, DType::E4M3);
  }
  COAT_DISPATCH("swiglu_packed", gu.device(), cpu::swiglu_packed(cg, y, row_max),
                cuda::swiglu_packed(cg, y, row_max));
  return y;
}

Tensor swiglu_packed_backward(const Tensor& dy, const Tensor& gu, Tensor* row_max) {
  const int64_t f = packed_half(gu, "swiglu_packed_backward");
  COAT_ARG_CHECK(dy.defined(), "swiglu_packed_backward", "dy is undefined");
  COAT_ARG_CHECK(dy.shape() == with_last(gu.shape(), f), "swiglu_packed_backward", "dy has shape ",
                 shape_str(dy.shape()), "; expected ", shape_str(with_last(gu.shape(), f)), " for gu ",
                 shape_str(gu.shape()));
  COAT_ARG_CHECK(dy.dtype() == gu.dtype(), "swiglu_packed_backward", "dy has dtype ", dtype_name(dy.dtype()),
                 " but gu has ", dtype_name(gu.dtype()));
  COAT_ARG_CHECK(dy.device() == gu.device(), "swiglu_packed_backward", "dy is on ", dy.device().str(),
                 " but gu is on ", gu.device().str());
  const Tensor cd = contiguous(dy), cg = contiguous(gu);
  Tensor dgu = Tensor::empty(gu.context(), gu.shape(), gu.dtype());
  if (row_max != nullptr) *row_max = row_maxima_for(dgu, "swiglu_packed_backward");
  COAT_DISPATCH("swiglu_packed_backward", gu.device(), cpu::swiglu_packed_backward(cd, cg, dgu, row_max),
                cuda::swiglu_packed_backward(cd, cg, dgu, row_max));
  return dgu;
}

Tensor swiglu_packed_backward_compressed(const Tensor& dy, const Tensor& codes, const Tensor& scale_inv,
                                         Tensor* row_max) {
  constexpr const char* op = "swiglu_packed_backward_compressed";
  COAT_ARG_CHECK(codes.defined() && codes.dtype() == DType::E4M3, op, "gu's codes must be E4M3, got ",
                 codes.defined() ? dtype_name(codes.dtype()) : "undefined");
  COAT_ARG_CHECK(codes.dim() >= 1 && codes.size(-1) % 2 == 0, op, "gu has shape ", shape_str(codes.shape()),
                 "; expected [..., 2F] (gate and up side by side)");
  const int64_t f = codes.size(-1) / 2;
  COAT_ARG_CHECK((2 * f) % 16 == 0, op, "gu's rows (", 2 * f, " codes) must be whole groups of 16");
  COAT_ARG_CHECK(dy.defined() && dy.shape() == with_last(codes.shape(), f), op, "dy has shape ",
                 dy.defined() ? shape_str(dy.shape()) : "undefined", "; expected ",
                 shape_str(with_last(codes.shape(), f)), " for gu ", shape_str(codes.shape()));
  COAT_ARG_CHECK(dy.dtype() == DType::F32 || dy.dtype() == DType::BF16, op,
                 "dy (and the restored gu) must be f32 or bf16, got ", dtype_name(dy.dtype()));
  COAT_ARG_CHECK(scale_inv.defined() && scale_inv.dtype() == DType::F32 && scale_inv.numel() * 16 == codes.numel(),
                 op, "scale_inv must be F32 with one value per 16 codes (", codes.numel() / 16, "), got ",
                 scale_inv.defined() ? scale_inv.str() : "undefined");
  COAT_ARG_CHECK(dy.device() == codes.device() && scale_inv.device() == codes.device(), op,
                 "dy, codes and scale_inv must be on one device");
  const Tensor cd = contiguous(dy), cc = contiguous(codes), cs = contiguous(scale_inv);
  if (codes.device().is_cpu()) {
    // The CPU reference: restore, then the plain backward (the same bytes by construction).
    Fp8PerGroup gu;
    gu.codes = cc;
    gu.scale_inv = cs.reshape(with_last(codes.shape(), 2 * f / 16));
    gu.group_size = 16;
    return swiglu_packed_backward(cd, dequantize(gu, dy.dtype()), row_max);
  }
  Tensor dgu = Tensor::empty(dy.context(), codes.shape(), dy.dtype());
  if (row_max != nullptr) *row_max = row_maxima_for(dgu, op);
  COAT_DISPATCH(op, codes.device(), (void)0, cuda::swiglu_packed_backward_compressed(cd, cc, cs, dgu, row_max));
  return dgu;
}

}  // namespace coat::ops
