// The autograd function of the fused softmax cross-entropy, with nothing read back from the device.
#include "coat/nn/loss.h"

#include "coat/core/nvtx.h"
#include "coat/nn/rows.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/elementwise.h"
#include "coat/ops/runtime.h"

namespace coat::nn {

LossOutput cross_entropy(autograd::Tape& tape, const autograd::Var& logits, const Tensor& targets, int64_t ignore_index,
                         double grad_scale, bool compute_grad) {
  const NvtxRange range("cross_entropy");
  const int64_t vocab = logits.value.size(-1);
  const int64_t rows = logits.value.numel() / vocab;
  COAT_ARG_CHECK(targets.numel() == rows, "cross_entropy", "targets ", shape_str(targets.shape()), " do not match logits ",
                 shape_str(logits.shape()));
  const Tensor logits2 = as_rows(logits.value);
  const Tensor targets1 = ops::contiguous(targets).reshape({rows});
  LossOutput out;
  out.result = ops::cross_entropy(logits2, targets1, ignore_index, grad_scale, compute_grad);
  out.loss_sum = out.result.loss_sum;
  out.count = out.result.count;
  // loss_sum * grad_scale in double on the device: the product the host formed before, without its read-back.
  Tensor value = ops::scale(out.loss_sum, grad_scale);
  Tensor dlogits = std::move(out.result.dlogits);  // the tape alone keeps it (freed once the backward used it)
  out.result.dlogits = Tensor();
  if (!compute_grad) {
    out.root = autograd::Var{value, -1};
    return out;
  }
  const Shape shape = logits.shape();
  out.root = tape.record("cross_entropy", value, {logits}, {dlogits},
                         [shape](const Tensor& seed, const std::vector<Tensor>& s) -> autograd::Grads {
                           // A host seed (loss_seed) is read without a device synchronisation.
                           const double k = ops::to_double_vector(seed)[0];
                           Tensor g = s[0].reshape(shape);
                           return {k == 1.0 ? g : ops::scale(g, k)};
                         });
  return out;
}

Tensor loss_seed() { return ops::full(ops::make_context(Device::cpu()), {1}, 1.0, DType::F64); }

}  // namespace coat::nn
