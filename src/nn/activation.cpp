#include "coat/nn/activation.h"

#include "coat/core/nvtx.h"
#include "coat/nn/compressed_save.h"
#include "coat/ops/activation.h"

namespace coat::nn {

autograd::Var swiglu(autograd::Tape& tape, const autograd::Var& gate, const autograd::Var& up) {
  const NvtxRange range("swiglu");
  return tape.record("swiglu", ops::swiglu(gate.value, up.value), {gate, up}, {gate.value, up.value},
                     [](const Tensor& dy, const std::vector<Tensor>& s) -> autograd::Grads {
                       ops::SwigluGrads g = ops::swiglu_backward(dy, s[0], s[1]);
                       return {g.dgate, g.dup};
                     });
}

autograd::Var swiglu_packed(autograd::Tape& tape, const autograd::Var& gu, bool compress, Tensor* out_row_maxima,
                            GradRowMaximaSlot dgu_maxima) {
  const NvtxRange range("swiglu_packed");
  // COAT's compressed copy of gu comes from the SwiGLU's own kernel (on CUDA: no second read of gu), which
  // needs F = gu.size(-1) / 2 to be whole groups.
  const bool copy_in_swiglu =
      compresses_input(tape, gu.value, compress) && gu.value.size(-1) % (2 * kCompressGroup) == 0;
  ops::Fp8PerGroup copy;
  Tensor y = ops::swiglu_packed(gu.value, out_row_maxima, copy_in_swiglu ? &copy : nullptr);
  std::vector<Tensor> saved;
  const SavedInput in = save_input(tape, gu.value, compress, saved, &copy);
  return tape.record("swiglu_packed", std::move(y), {gu}, std::move(saved),
                     [in, dgu_maxima](const Tensor& dy, const std::vector<Tensor>& s) -> autograd::Grads {
                       // A compressed gu is restored inside the backward kernel (no separate pass).
                       Tensor maxima;
                       Tensor* m = dgu_maxima ? &maxima : nullptr;
                       Tensor dgu = in.compressed ? ops::swiglu_packed_backward_compressed(dy, s[0], s[1], m)
                                                  : ops::swiglu_packed_backward(dy, s[0], m);
                       if (dgu_maxima) dgu_maxima->put(dgu, std::move(maxima));
                       return {std::move(dgu)};
                     });
}

}  // namespace coat::nn
