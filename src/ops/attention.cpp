// Causal GQA attention: validation here, kernels in the backends.
#include "coat/ops/attention.h"

#include <cmath>
#include <cstdint>

#include "coat/backend/cpu/attention.h"
#include "coat/backend/token_strided.h"
#ifdef COAT_WITH_CUDA
#include "coat/backend/cuda/attention.h"
#endif
#include "coat/ops/copy.h"
#include "coat/ops/dispatch.h"

namespace coat::ops {
namespace {

DType stat_dtype(DType t) {
  return t == DType::F64 ? DType::F64 : DType::F32;
}

void check_same(const Tensor& t, const Tensor& q, const Shape& shape, const char* op, const char* name) {
  COAT_ARG_CHECK(t.defined(), op, name, " is undefined");
  COAT_ARG_CHECK(t.shape() == shape, op, name, " has shape ", shape_str(t.shape()), "; expected ",
                 shape_str(shape));
  COAT_ARG_CHECK(t.dtype() == q.dtype(), op, name, " has dtype ", dtype_name(t.dtype()), " but q has ",
                 dtype_name(q.dtype()));
  COAT_ARG_CHECK(t.device() == q.device(), op, name, " is on ", t.device().str(), " but q is on ",
                 q.device().str());
}

void check_qkv(const Tensor& q, const Tensor& k, const Tensor& v, double scale, const char* op) {
  COAT_ARG_CHECK(q.defined() && k.defined() && v.defined(), op, "q, k and v must be defined");
  COAT_ARG_CHECK(q.dtype() == DType::F32 || q.dtype() == DType::F64 || q.dtype() == DType::BF16, op,
                 "q has dtype ", dtype_name(q.dtype()), "; expected f32, f64 or bf16");
  COAT_ARG_CHECK(q.dim() == 4, op, "q has shape ", shape_str(q.shape()), "; expected [B, T, Hq, Dh]");
  COAT_ARG_CHECK(k.dim() == 4, op, "k has shape ", shape_str(k.shape()), "; expected [B, T, Hkv, Dh]");
  COAT_ARG_CHECK(k.size(0) == q.size(0) && k.size(3) == q.size(3), op, "k ", shape_str(k.shape()),
                 " does not match q ", shape_str(q.shape()), " in batch or head dimension");
  COAT_ARG_CHECK(k.size(1) >= q.size(1), op, "k ", shape_str(k.shape()), " has fewer positions than q ",
                 shape_str(q.shape()));
  COAT_ARG_CHECK(k.size(2) > 0 && q.size(2) % k.size(2) == 0, op, "query heads ", q.size(2),
                 " are not a multiple of kv heads ", k.size(2), " (q ", shape_str(q.shape()), ", k ",
                 shape_str(k.shape()), ")");
  check_same(k, q, k.shape(), op, "k");
  check_same(v, q, k.shape(), op, "v");
  COAT_ARG_CHECK(std::isfinite(scale), op, "scale ", scale, " must be finite");
}

/// Whether the backend takes t as it is: on CUDA a token-strided view whose start and token stride are
/// 16-byte aligned (cuDNN is told its strides), on the CPU contiguous tensors only.
bool backend_takes(const Tensor& t) {
  if (!t.device().is_cuda()) return t.is_contiguous();
  const int64_t ts = token_stride_of(t);
  return ts >= 0 && reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 &&
         (static_cast<size_t>(ts) * dtype_size(t.dtype())) % 16 == 0;
}

/// t itself when the backend takes it, else a contiguous copy.
Tensor backend_layout(const Tensor& t) {
  return backend_takes(t) ? t : contiguous(t);
}

void check_lse(const Tensor& lse, const Tensor& q, const char* op) {
  const Shape lse_shape{q.size(0), q.size(2), q.size(1)};
  COAT_ARG_CHECK(lse.defined(), op, "lse is undefined");
  COAT_ARG_CHECK(lse.shape() == lse_shape, op, "lse has shape ", shape_str(lse.shape()), "; expected ",
                 shape_str(lse_shape), " [B, Hq, T]");
  COAT_ARG_CHECK(lse.dtype() == stat_dtype(q.dtype()), op, "lse has dtype ", dtype_name(lse.dtype()),
                 "; expected ", dtype_name(stat_dtype(q.dtype())), " for q of ", dtype_name(q.dtype()));
  COAT_ARG_CHECK(lse.device() == q.device(), op, "lse is on ", lse.device().str(), " but q is on ",
                 q.device().str());
}

}  // namespace

AttentionForward attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale) {
  check_qkv(q, k, v, scale, "attention_forward");
  const Tensor cq = backend_layout(q), ck = backend_layout(k), cv = backend_layout(v);
  AttentionForward r;
  r.out = Tensor::empty(q.context(), q.shape(), q.dtype());
  r.lse = Tensor::empty(q.context(), {q.size(0), q.size(2), q.size(1)}, stat_dtype(q.dtype()));
  // CUDA: cuDNN flash attention, bf16 only (f32/f64 throw NotImplemented there: cast to bf16 first).
  COAT_DISPATCH("attention_forward", q.device(), cpu::attention_forward(cq, ck, cv, scale, r.out, r.lse),
                cuda::attention_forward(cq, ck, cv, scale, r.out, r.lse));
  return r;
}

AttentionGrads attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& out, const Tensor& lse, double scale) {
  AttentionGrads g;
  g.dq = Tensor::empty(q.context(), q.shape(), q.dtype());
  g.dk = Tensor::empty(q.context(), k.shape(), k.dtype());
  g.dv = Tensor::empty(q.context(), v.shape(), v.dtype());
  attention_backward(dout, q, k, v, out, lse, scale, g.dq, g.dk, g.dv);
  return g;
}

void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse, double scale, Tensor& dq, Tensor& dk,
                        Tensor& dv) {
  const char* op = "attention_backward";
  check_qkv(q, k, v, scale, op);
  check_same(dout, q, q.shape(), op, "dout");
  check_same(out, q, q.shape(), op, "out");
  check_lse(lse, q, op);
  check_same(dq, q, q.shape(), op, "dq");
  check_same(dk, q, k.shape(), op, "dk");
  check_same(dv, q, v.shape(), op, "dv");
  const Tensor cdo = backend_layout(dout), cq = backend_layout(q), ck = backend_layout(k),
               cv = backend_layout(v);
  const Tensor co = backend_layout(out), cl = contiguous(lse);
  // The backend writes into outputs it takes directly, into contiguous buffers copied in afterwards
  // otherwise.
  auto target = [](const Tensor& t) {
    return backend_takes(t) ? t : Tensor::empty(t.context(), t.shape(), t.dtype());
  };
  Tensor tq = target(dq), tk = target(dk), tv = target(dv);
  COAT_DISPATCH("attention_backward", q.device(),
                cpu::attention_backward(cdo, cq, ck, cv, co, cl, scale, tq, tk, tv),
                cuda::attention_backward(cdo, cq, ck, cv, co, cl, scale, tq, tk, tv, q.context()->deterministic()));
  if (!backend_takes(dq)) copy_(dq, tq);
  if (!backend_takes(dk)) copy_(dk, tk);
  if (!backend_takes(dv)) copy_(dv, tv);
}

}  // namespace coat::ops
