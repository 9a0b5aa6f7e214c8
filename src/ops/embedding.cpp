// Embedding lookup: validation here, kernels in the backends.
#include "coat/ops/embedding.h"

#include "coat/backend/cpu/embedding.h"
#include "coat/ops/copy.h"
#include "coat/ops/dispatch.h"
#ifdef COAT_WITH_CUDA
#include "coat/backend/cuda/embedding.h"
#endif

namespace coat::ops {
namespace {

void check_ids(const Tensor& ids, const Tensor& ref, const char* op) {
  COAT_ARG_CHECK(ids.defined(), op, "ids is undefined");
  COAT_ARG_CHECK(ids.dtype() == DType::I32 || ids.dtype() == DType::I64, op, "ids have dtype ",
                 dtype_name(ids.dtype()), "; expected i32 or i64");
  COAT_ARG_CHECK(ids.device() == ref.device(), op, "ids are on ", ids.device().str(), " but the table is on ",
                 ref.device().str());
}

Shape with_last(const Shape& s, int64_t d) {
  Shape out = s;
  out.push_back(d);
  return out;
}

}  // namespace

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  COAT_ARG_CHECK(weight.defined(), "embedding", "weight is undefined");
  COAT_ARG_CHECK(
      weight.dtype() == DType::F32 || weight.dtype() == DType::F64 || weight.dtype() == DType::BF16,
      "embedding", "weight has dtype ", dtype_name(weight.dtype()), "; expected f32, f64 or bf16");
  COAT_ARG_CHECK(weight.dim() == 2, "embedding", "weight has shape ", shape_str(weight.shape()),
                 "; expected [V, D]");
  check_ids(ids, weight, "embedding");
  const Tensor cw = contiguous(weight), ci = contiguous(ids);
  Tensor out = Tensor::empty(weight.context(), with_last(ids.shape(), weight.size(1)), weight.dtype());
  COAT_DISPATCH("embedding", weight.device(), cpu::embedding(cw, ci, out),
                cuda::embedding(cw, ci, out));
  return out;
}

void embedding_backward(const Tensor& dy, const Tensor& ids, Tensor dweight_accum) {
  const char* op = "embedding_backward";
  COAT_ARG_CHECK(dweight_accum.defined(), op, "dweight_accum is undefined");
  COAT_ARG_CHECK(dweight_accum.dim() == 2, op, "dweight_accum has shape ", shape_str(dweight_accum.shape()),
                 "; expected [V, D]");
  COAT_ARG_CHECK(dweight_accum.dtype() == DType::F32 || dweight_accum.dtype() == DType::F64, op,
                 "dweight_accum has dtype ", dtype_name(dweight_accum.dtype()), "; expected f32 or f64");
  COAT_ARG_CHECK(dweight_accum.is_contiguous(), op, "dweight_accum must be contiguous");
  check_ids(ids, dweight_accum, op);
  COAT_ARG_CHECK(dy.defined(), op, "dy is undefined");
  COAT_ARG_CHECK(dy.dtype() == DType::F32 || dy.dtype() == DType::F64 || dy.dtype() == DType::BF16, op,
                 "dy has dtype ", dtype_name(dy.dtype()), "; expected f32, f64 or bf16");
  const Shape expected = with_last(ids.shape(), dweight_accum.size(1));
  COAT_ARG_CHECK(dy.shape() == expected, op, "dy has shape ", shape_str(dy.shape()), "; expected ",
                 shape_str(expected), " (ids ", shape_str(ids.shape()), " + [D])");
  COAT_ARG_CHECK(dy.device() == dweight_accum.device(), op, "dy is on ", dy.device().str(),
                 " but dweight_accum is on ", dweight_accum.device().str());
  const Tensor cd = contiguous(dy), ci = contiguous(ids);
  COAT_DISPATCH("embedding_backward", dweight_accum.device(), cpu::embedding_backward(cd, ci, dweight_accum),
                cuda::embedding_backward(cd, ci, dweight_accum));
}

}  // namespace coat::ops
