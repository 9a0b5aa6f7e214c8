// CPU reference: SwiGLU gating, templated on the element type.
#include "coat/backend/cpu/activation.h"

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "coat/backend/cpu/typed_storage.h"
#include "coat/core/float_formats.h"

namespace coat::cpu {
namespace {


template <typename A>
A sigmoid(A x) {
  return A(1) / (A(1) + std::exp(-x));
}

template <typename S>
void swiglu_impl(const Tensor& gate, const Tensor& up, Tensor& y) {
  const int64_t n = gate.numel();
  const S* g = gate.data<S>();
  const S* u = up.data<S>();
  S* out = y.data<S>();
  for (int64_t i = 0; i < n; ++i) {
    const auto x = widen(g[i]);
    out[i] = narrow<S>(x * sigmoid(x) * widen(u[i]));
  }
}

template <typename S>
void swiglu_backward_impl(const Tensor& dy, const Tensor& gate, const Tensor& up, Tensor& dgate,
                          Tensor& dup) {
  using A = acc_t<S>;
  const int64_t n = gate.numel();
  const S* d = dy.data<S>();
  const S* g = gate.data<S>();
  const S* u = up.data<S>();
  S* dg = dgate.data<S>();
  S* du = dup.data<S>();
  for (int64_t i = 0; i < n; ++i) {
    const A x = widen(g[i]), dyv = widen(d[i]);
    const A s = sigmoid(x);
    dg[i] = narrow<S>(dyv * widen(u[i]) * (s * (A(1) + x * (A(1) - s))));
    du[i] = narrow<S>(dyv * (x * s));
  }
}

}  // namespace

void swiglu(const Tensor& gate, const Tensor& up, Tensor& y) {
  dispatch_storage(gate.dtype(), "swiglu", [&](auto s) { swiglu_impl<decltype(s)>(gate, up, y); });
}

void swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up, Tensor& dgate, Tensor& dup) {
  dispatch_storage(gate.dtype(), "swiglu_backward",
                   [&](auto s) { swiglu_backward_impl<decltype(s)>(dy, gate, up, dgate, dup); });
}

}  // namespace coat::cpu
