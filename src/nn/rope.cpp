#include "coat/nn/rope.h"

#include <utility>

#include "coat/core/nvtx.h"
#include "coat/ops/rope.h"

namespace coat::nn {
namespace {

/// Frequencies: a theta (the default RoPE) or the inverse frequencies, as ops::rope takes them.
template <typename Frequencies>
autograd::Var record_rope(autograd::Tape& tape, const autograd::Var& x, Frequencies freq,
                          int64_t position_offset) {
  const NvtxRange range("rope");
  Tensor y = ops::rope(x.value, freq, position_offset);
  return tape.record("rope", std::move(y), {x}, {},
                     [freq = std::move(freq), position_offset](
                         const Tensor& dy, const std::vector<Tensor>&) -> autograd::Grads {
                       return {ops::rope(dy, freq, position_offset, /*inverse=*/true)};
                     });
}

}  // namespace

autograd::Var rope(autograd::Tape& tape, const autograd::Var& x, std::vector<double> inv_freq,
                   int64_t position_offset) {
  return record_rope(tape, x, std::move(inv_freq), position_offset);
}

autograd::Var rope(autograd::Tape& tape, const autograd::Var& x, double theta, int64_t position_offset) {
  return record_rope(tape, x, theta, position_offset);
}

}  // namespace coat::nn
