// CPU reference: SwiGLU gating, templated on the element type.
#include "coat/backend/cpu/activation.h"

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "coat/backend/cpu/row_max.h"
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

template <typename S>
void swiglu_packed_impl(const Tensor& gu, Tensor& y, Tensor* row_max) {
  const int64_t f = y.size(-1);
  const int64_t rows = f == 0 ? 0 : y.numel() / f;
  const S* in = gu.data<S>();
  S* out = y.data<S>();
  float* row_max_p = row_max != nullptr ? row_max->data<float>() : nullptr;
  for (int64_t r = 0; r < rows; ++r) {
    const S* g = in + r * 2 * f;
    const S* u = g + f;
    S* o = out + r * f;
    for (int64_t j = 0; j < f; ++j) {
      const auto x = widen(g[j]);
      o[j] = narrow<S>(x * sigmoid(x) * widen(u[j]));
    }
    if (row_max_p != nullptr) row_max_p[r] = stored_row_max(o, f);
  }
  if (f == 0 && row_max_p != nullptr)
    for (int64_t r = 0; r < row_max->numel(); ++r) row_max_p[r] = 0.0f;
}

template <typename S>
void swiglu_packed_backward_impl(const Tensor& dy, const Tensor& gu, Tensor& dgu, Tensor* row_max) {
  using A = acc_t<S>;
  const int64_t f = dy.size(-1);
  const int64_t rows = f == 0 ? 0 : dy.numel() / f;
  const S* d = dy.data<S>();
  const S* in = gu.data<S>();
  S* out = dgu.data<S>();
  float* row_max_p = row_max != nullptr ? row_max->data<float>() : nullptr;
  if (f == 0 && row_max_p != nullptr)
    for (int64_t r = 0; r < row_max->numel(); ++r) row_max_p[r] = 0.0f;
  for (int64_t r = 0; r < rows; ++r) {
    const S* g = in + r * 2 * f;
    const S* u = g + f;
    const S* dr = d + r * f;
    S* dg = out + r * 2 * f;
    S* du = dg + f;
    for (int64_t j = 0; j < f; ++j) {
      const A x = widen(g[j]), dyv = widen(dr[j]);
      const A s = sigmoid(x);
      dg[j] = narrow<S>(dyv * widen(u[j]) * (s * (A(1) + x * (A(1) - s))));
      du[j] = narrow<S>(dyv * (x * s));
    }
    if (row_max_p != nullptr) row_max_p[r] = stored_row_max(dg, 2 * f);
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

void swiglu_packed(const Tensor& gu, Tensor& y, Tensor* row_max) {
  dispatch_storage(gu.dtype(), "swiglu_packed",
                   [&](auto s) { swiglu_packed_impl<decltype(s)>(gu, y, row_max); });
}

void swiglu_packed_backward(const Tensor& dy, const Tensor& gu, Tensor& dgu, Tensor* row_max) {
  dispatch_storage(gu.dtype(), "swiglu_packed_backward",
                   [&](auto s) { swiglu_packed_backward_impl<decltype(s)>(dy, gu, dgu, row_max); });
}

}  // namespace coat::cpu
