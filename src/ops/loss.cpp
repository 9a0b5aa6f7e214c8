// Softmax cross-entropy: validation here, kernels in the backends.
#include "coat/ops/loss.h"

#include <cmath>

#include "coat/backend/cpu/loss.h"
#include "coat/ops/copy.h"
#include "coat/ops/dispatch.h"
#ifdef COAT_WITH_CUDA
#include "coat/backend/cuda/loss.h"
#endif

namespace coat::ops {

CrossEntropyResult cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                 double grad_scale, bool compute_grad) {
  const char* op = "cross_entropy";
  COAT_ARG_CHECK(logits.defined(), op, "logits are undefined");
  COAT_ARG_CHECK(
      logits.dtype() == DType::F32 || logits.dtype() == DType::F64 || logits.dtype() == DType::BF16, op,
      "logits have dtype ", dtype_name(logits.dtype()), "; expected f32, f64 or bf16");
  COAT_ARG_CHECK(logits.dim() >= 1 && logits.size(-1) > 0, op, "logits ", shape_str(logits.shape()),
                 " need a non-empty last (vocabulary) dimension");
  COAT_ARG_CHECK(targets.defined(), op, "targets are undefined");
  COAT_ARG_CHECK(targets.dtype() == DType::I32 || targets.dtype() == DType::I64, op, "targets have dtype ",
                 dtype_name(targets.dtype()), "; expected i32 or i64");
  const Shape rows_shape(logits.shape().begin(), logits.shape().end() - 1);
  COAT_ARG_CHECK(targets.shape() == rows_shape, op, "targets have shape ", shape_str(targets.shape()),
                 "; expected ", shape_str(rows_shape), " for logits ", shape_str(logits.shape()));
  COAT_ARG_CHECK(targets.device() == logits.device(), op, "targets are on ", targets.device().str(),
                 " but logits are on ", logits.device().str());
  COAT_ARG_CHECK(std::isfinite(grad_scale), op, "grad_scale ", grad_scale, " must be finite");
  const Tensor cl = contiguous(logits), ct = contiguous(targets);
  CrossEntropyResult result;
  if (compute_grad) result.dlogits = Tensor::empty(logits.context(), logits.shape(), logits.dtype());
  COAT_DISPATCH(
      op, logits.device(),
      result.loss_sum = cpu::cross_entropy(cl, ct, ignore_index, grad_scale, result.dlogits, result.count),
      result.loss_sum = cuda::cross_entropy(cl, ct, ignore_index, grad_scale, result.dlogits, result.count));
  return result;
}

}  // namespace coat::ops
