#include "coat/nn/rope.h"

#include "coat/core/nvtx.h"
#include "coat/ops/rope.h"

namespace coat::nn {

autograd::Var rope(autograd::Tape& tape, const autograd::Var& x, double theta, int64_t position_offset) {
  const NvtxRange range("rope");
  return tape.record("rope", ops::rope(x.value, theta, position_offset), {x}, {},
                     [theta, position_offset](const Tensor& dy, const std::vector<Tensor>&) -> autograd::Grads {
                       return {ops::rope(dy, theta, position_offset, /*inverse=*/true)};
                     });
}

}  // namespace coat::nn
