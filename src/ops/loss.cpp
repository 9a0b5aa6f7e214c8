// Softmax cross-entropy: validation here, kernels in the backends.
#include "coat/ops/loss.h"

#include <cmath>
#include <cstring>
#include <vector>

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
  result.vocab = logits.size(-1);
  result.ignore_index = ignore_index;
  result.sums = Tensor::empty(logits.context(), {kCrossEntropySumsWords}, DType::I64, MemoryCategory::Workspace);
  result.loss_sum = result.sums.view_as(DType::F64).slice(0, 0, 1);
  result.count = result.sums.view_as(DType::F64).slice(0, 1, 2);
  if (compute_grad) result.dlogits = Tensor::empty(logits.context(), logits.shape(), logits.dtype());
  COAT_DISPATCH(op, logits.device(),
                cpu::cross_entropy(cl, ct, ignore_index, grad_scale, result.dlogits, result.sums),
                cuda::cross_entropy(cl, ct, ignore_index, grad_scale, result.dlogits, result.sums));
  return result;
}

Tensor CrossEntropyResult::totals() const {
  COAT_ARG_CHECK(sums.defined(), "cross_entropy", "totals() of a result without sums");
  return sums.view_as(DType::F64).slice(0, 0, 3);
}

CrossEntropyValues CrossEntropyResult::read() const {
  COAT_ARG_CHECK(sums.defined(), "cross_entropy", "read() of a result without sums");
  const std::vector<uint8_t> bytes = to_bytes(sums);  // the one read-back
  CrossEntropySums s{};
  std::memcpy(&s, bytes.data(), sizeof s);
  COAT_ARG_CHECK(s.bad_position < 0, "cross_entropy", "target ", s.bad_target, " at position ", s.bad_position,
                 " is outside [0, V) with V = ", vocab, " and is not ignore_index (", ignore_index, ")");
  return {s.loss_sum, static_cast<int64_t>(s.count)};
}

CrossEntropyValues read_totals(const Tensor& totals, int64_t vocab, int64_t ignore_index) {
  COAT_ARG_CHECK(totals.defined() && totals.dtype() == DType::F64 && totals.numel() == 3, "cross_entropy",
                 "totals must be F64 [3] {loss_sum, count, bad_rows}, got ",
                 totals.defined() ? totals.str() : std::string("undefined"));
  const std::vector<double> t = to_double_vector(totals);  // the one read-back
  COAT_ARG_CHECK(t[2] == 0.0, "cross_entropy", t[2], " targets are outside [0, V) with V = ", vocab,
                 " and are not ignore_index (", ignore_index, ")");
  return {t[0], static_cast<int64_t>(t[1])};
}

}  // namespace coat::ops
