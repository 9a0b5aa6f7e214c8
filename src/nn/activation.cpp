#include "coat/nn/activation.h"

#include "coat/ops/activation.h"

namespace coat::nn {

autograd::Var swiglu(autograd::Tape& tape, const autograd::Var& gate, const autograd::Var& up) {
  return tape.record("swiglu", ops::swiglu(gate.value, up.value), {gate, up}, {gate.value, up.value},
                     [](const Tensor& dy, const std::vector<Tensor>& s) -> autograd::Grads {
                       ops::SwigluGrads g = ops::swiglu_backward(dy, s[0], s[1]);
                       return {g.dgate, g.dup};
                     });
}

}  // namespace coat::nn
