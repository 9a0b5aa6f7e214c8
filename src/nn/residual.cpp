#include "coat/nn/residual.h"

#include "coat/core/nvtx.h"
#include "coat/nn/compressed_save.h"
#include "coat/ops/add_quantize.h"
#include "coat/ops/copy.h"
#include "coat/ops/elementwise.h"

namespace coat::nn {

autograd::Var add(autograd::Tape& tape, const autograd::Var& a, const autograd::Var& b,
                  ops::Fp8PerGroup* compressed_copy) {
  const NvtxRange range("add");
  Tensor sum;
  if (compressed_copy != nullptr && compresses_input(tape, a.value, /*compress=*/true)) {
    ops::SumAndGroups fused = ops::add_quantize_per_group(a.value, b.value, kCompressGroup, DType::E4M3);
    sum = std::move(fused.sum);
    *compressed_copy = std::move(fused.groups);
  } else {
    if (compressed_copy != nullptr) *compressed_copy = ops::Fp8PerGroup();
    sum = ops::add(a.value, b.value);
  }
  return tape.record("add", std::move(sum), {a, b}, {},
                     [](const Tensor& dy, const std::vector<Tensor>&) -> autograd::Grads { return {dy, dy}; });
}

autograd::Var reshape(autograd::Tape& tape, const autograd::Var& x, const Shape& shape) {
  const NvtxRange range("reshape");
  const Shape original = x.shape();
  return tape.record("reshape", ops::contiguous(x.value).reshape(shape), {x}, {},
                     [original](const Tensor& dy, const std::vector<Tensor>&) -> autograd::Grads {
                       return {ops::contiguous(dy).reshape(original)};
                     });
}

}  // namespace coat::nn
