#include "coat/nn/checkpoint.h"

#include <memory>

namespace coat::nn {

autograd::Var checkpoint(autograd::Tape& tape, const autograd::Var& x, CheckpointedFn fn, bool force_grad) {
  if (!tape.grad_enabled()) return fn(tape, x);
  // The forward keeps nothing: on a tape with gradients off every function runs forward only.
  Tensor y;
  {
    autograd::Tape forward_only(/*grad_enabled=*/false);
    y = fn(forward_only, forward_only.leaf(x.value)).value;
  }
  const bool want_dx = x.requires_grad();
  auto shared_fn = std::make_shared<CheckpointedFn>(std::move(fn));
  return tape.record(
      "checkpoint", std::move(y), {x}, {x.value},
      [shared_fn, want_dx](const Tensor& dy, const std::vector<Tensor>& saved) -> autograd::Grads {
        autograd::Tape replay;
        const autograd::Var input = replay.leaf(saved[0], /*requires_grad=*/want_dx);
        const autograd::Var output = (*shared_fn)(replay, input);
        // Nothing inside needs a gradient (no parameters with gradients, x constant): nothing to do.
        if (!output.requires_grad()) return {Tensor()};
        replay.backward(output, dy);
        return {want_dx ? replay.grad(input) : Tensor()};
      },
      force_grad);
}

}  // namespace coat::nn
