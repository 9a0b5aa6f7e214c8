#include "coat/nn/embedding.h"

#include "coat/core/nvtx.h"
#include "coat/ops/copy.h"
#include "coat/ops/embedding.h"

namespace coat::nn {

autograd::Var embedding(autograd::Tape& tape, Parameter& table, const Tensor& ids) {
  const NvtxRange range("embedding");
  const Tensor flat_ids = ops::contiguous(ids).reshape({ids.numel()});
  Shape out_shape = ids.shape();
  out_shape.push_back(table.value.size(1));
  Tensor y = ops::embedding(table.value, flat_ids).reshape(out_shape);
  Parameter* p = &table;
  return tape.record(
      "embedding", std::move(y), {}, {flat_ids},
      [p](const Tensor& dy, const std::vector<Tensor>& saved) -> autograd::Grads {
        const int64_t hidden = dy.size(-1);
        ops::embedding_backward(ops::contiguous(dy).reshape({dy.numel() / hidden, hidden}), saved[0], p->grad);
        return {};
      },
      /*force_grad=*/table.needs_grad());
}

}  // namespace coat::nn
