// Shared by the FP8 linear tests: one linear layer's operands, a forward + backward through some linear
// function captured as doubles, and the relative L2 distance the tests bound.
#pragma once

#include <cmath>
#include <utility>
#include <vector>

#include "coat/autograd/tape.h"
#include "coat/nn/parameter.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/runtime.h"

namespace coat::test {

struct LinearOperands {
  ContextPtr ctx = ops::make_context(Device::cpu());
  nn::Parameter w;
  Tensor x, dy;
};

struct LinearResult {
  std::vector<double> y, dx, dw;
  size_t saved = 0;  ///< bytes the function kept for its backward
};

/// w's gradient zeroed, y = apply(tape, x leaf, w), backward from dy; y, dx, dw and the saved bytes.
template <typename Apply>
LinearResult run_linear(LinearOperands& s, Apply&& apply) {
  ops::fill_(s.w.grad, 0.0);
  autograd::Tape tape;
  autograd::Var x = tape.leaf(s.x, true);
  autograd::Var y = std::forward<Apply>(apply)(tape, x, s.w);
  LinearResult r;
  r.saved = tape.saved_bytes();
  tape.backward(y, s.dy);
  r.y = ops::to_double_vector(y.value);
  r.dx = ops::to_double_vector(tape.grad(x));
  r.dw = ops::to_double_vector(s.w.grad);
  return r;
}

inline double rel_l2(const std::vector<double>& a, const std::vector<double>& ref) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - ref[i]) * (a[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / den);
}

}  // namespace coat::test
