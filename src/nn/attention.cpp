#include "coat/nn/attention.h"

#include "coat/core/nvtx.h"
#include "coat/ops/attention.h"

namespace coat::nn {

autograd::Var attention(autograd::Tape& tape, const autograd::Var& q, const autograd::Var& k, const autograd::Var& v,
                        double scale) {
  const NvtxRange range("attention");
  ops::AttentionForward f = ops::attention_forward(q.value, k.value, v.value, scale);
  return tape.record("attention", f.out, {q, k, v}, {q.value, k.value, v.value, f.out, f.lse},
                     [scale](const Tensor& dy, const std::vector<Tensor>& s) -> autograd::Grads {
                       ops::AttentionGrads g = ops::attention_backward(dy, s[0], s[1], s[2], s[3], s[4], scale);
                       return {g.dq, g.dk, g.dv};
                     });
}

}  // namespace coat::nn
