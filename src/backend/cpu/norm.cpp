// CPU reference: RMSNorm and LayerNorm (no affine), templated on the element type.
#include "coat/backend/cpu/norm.h"

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "coat/backend/cpu/row_max.h"
#include "coat/backend/element_access.h"
#include "coat/backend/cpu/typed_storage.h"
#include "coat/core/float_formats.h"

namespace coat::cpu {
namespace {


struct Rows {
  int64_t n = 0;  // rows
  int64_t d = 0;  // elements per row
};

Rows rows_of(const Tensor& x) {
  const int64_t d = x.dim() == 0 ? 1 : x.size(-1);
  return {d == 0 ? 0 : x.numel() / d, d};
}

/// accum[i] += add[i] for an f32 or f64 accumulator.
void add_into(Tensor& accum, const std::vector<double>& add) {
  if (accum.dtype() == DType::F64) {
    double* a = accum.data<double>();
    for (size_t i = 0; i < add.size(); ++i) a[i] += add[i];
  } else {
    float* a = accum.data<float>();
    for (size_t i = 0; i < add.size(); ++i) a[i] = static_cast<float>(static_cast<double>(a[i]) + add[i]);
  }
}

template <typename S>
void rmsnorm_forward_impl(const Tensor& x, const Tensor& weight, double eps, Tensor& y, Tensor& rstd,
                          Tensor* row_max) {
  using A = acc_t<S>;
  const Rows r = rows_of(x);
  const S* xp = x.data<S>();
  const S* wp = weight.defined() ? weight.data<S>() : nullptr;
  S* yp = y.data<S>();
  A* rp = rstd.data<A>();
  float* row_max_p = row_max != nullptr ? row_max->data<float>() : nullptr;
  std::vector<A> w(static_cast<size_t>(r.d), A(1));
  if (wp != nullptr)
    for (int64_t i = 0; i < r.d; ++i) w[i] = widen(wp[i]);
  for (int64_t n = 0; n < r.n; ++n) {
    const S* xr = xp + n * r.d;
    S* yr = yp + n * r.d;
    double ss = 0.0;
    for (int64_t i = 0; i < r.d; ++i) {
      const double v = widen(xr[i]);
      ss += v * v;
    }
    const A inv = static_cast<A>(1.0 / std::sqrt(ss / static_cast<double>(r.d) + eps));
    rp[n] = inv;
    for (int64_t i = 0; i < r.d; ++i) yr[i] = narrow<S>(widen(xr[i]) * inv * w[i]);
    if (row_max_p != nullptr) row_max_p[n] = stored_row_max(yr, r.d);
  }
}

/// The backward's epilogue on one row of dx (already rounded to S): + the residual gradient, rounded once more
/// (the bytes of ops::add(residual, dx)), then the row's max |dx| as stored. Either may be absent.
template <typename S>
void finish_dx_row(S* dxr, const S* residual_row, float* row_max, int64_t d, DType t) {
  if (residual_row != nullptr)
    for (int64_t i = 0; i < d; ++i)
      store_from_double(dxr, i, t, load_as_double(residual_row, i, t) + load_as_double(dxr, i, t));
  if (row_max != nullptr) *row_max = stored_row_max(dxr, d);
}

template <typename S>
void rmsnorm_backward_impl(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd,
                           Tensor& dx, Tensor& dweight_accum, const Tensor& residual, Tensor* row_max) {
  using A = acc_t<S>;
  const Rows r = rows_of(x);
  const S* xp = x.data<S>();
  const S* dyp = dy.data<S>();
  const A* rp = rstd.data<A>();
  S* dxp = dx.data<S>();
  const bool affine = weight.defined();
  std::vector<A> w(static_cast<size_t>(r.d), A(1));
  if (affine)
    for (int64_t i = 0; i < r.d; ++i) w[i] = widen(weight.data<S>()[i]);
  std::vector<double> dw(affine ? static_cast<size_t>(r.d) : 0, 0.0);
  std::vector<A> g(static_cast<size_t>(r.d)), xv(static_cast<size_t>(r.d));
  for (int64_t n = 0; n < r.n; ++n) {
    const S* xr = xp + n * r.d;
    const S* dyr = dyp + n * r.d;
    const A inv = rp[n];
    double dot = 0.0;  // sum_i g_i x_i
    for (int64_t i = 0; i < r.d; ++i) {
      xv[i] = widen(xr[i]);
      g[i] = widen(dyr[i]) * w[i];
      dot += static_cast<double>(g[i]) * static_cast<double>(xv[i]);
    }
    // dx = rstd * g - rstd^3 * x * mean(g * x)
    const A c = static_cast<A>(static_cast<double>(inv) * inv * inv * dot / static_cast<double>(r.d));
    S* dxr = dxp + n * r.d;
    for (int64_t i = 0; i < r.d; ++i) dxr[i] = narrow<S>(inv * g[i] - c * xv[i]);
    finish_dx_row(dxr, residual.defined() ? residual.data<S>() + n * r.d : nullptr,
                  row_max != nullptr ? row_max->data<float>() + n : nullptr, r.d, x.dtype());
    if (affine)
      for (int64_t i = 0; i < r.d; ++i)
        dw[i] += static_cast<double>(widen(dyr[i])) * static_cast<double>(xv[i] * inv);
  }
  if (affine) add_into(dweight_accum, dw);
}

template <typename S>
void layernorm_forward_impl(const Tensor& x, double eps, Tensor& y, Tensor& mean, Tensor& rstd,
                            Tensor* row_max) {
  using A = acc_t<S>;
  const Rows r = rows_of(x);
  const S* xp = x.data<S>();
  S* yp = y.data<S>();
  A* mp = mean.data<A>();
  A* rp = rstd.data<A>();
  float* row_max_p = row_max != nullptr ? row_max->data<float>() : nullptr;
  for (int64_t n = 0; n < r.n; ++n) {
    const S* xr = xp + n * r.d;
    S* yr = yp + n * r.d;
    double sum = 0.0;
    for (int64_t i = 0; i < r.d; ++i) sum += widen(xr[i]);
    const double mu = sum / static_cast<double>(r.d);
    double var = 0.0;
    for (int64_t i = 0; i < r.d; ++i) {
      const double c = widen(xr[i]) - mu;
      var += c * c;
    }
    const A m = static_cast<A>(mu);
    const A inv = static_cast<A>(1.0 / std::sqrt(var / static_cast<double>(r.d) + eps));
    mp[n] = m;
    rp[n] = inv;
    for (int64_t i = 0; i < r.d; ++i) yr[i] = narrow<S>((widen(xr[i]) - m) * inv);
    if (row_max_p != nullptr) row_max_p[n] = stored_row_max(yr, r.d);
  }
}

template <typename S>
void layernorm_backward_impl(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                             Tensor& dx, const Tensor& residual, Tensor* row_max) {
  using A = acc_t<S>;
  const Rows r = rows_of(x);
  const S* xp = x.data<S>();
  const S* dyp = dy.data<S>();
  const A* mp = mean.data<A>();
  const A* rp = rstd.data<A>();
  S* dxp = dx.data<S>();
  std::vector<A> xhat(static_cast<size_t>(r.d)), g(static_cast<size_t>(r.d));
  for (int64_t n = 0; n < r.n; ++n) {
    const S* xr = xp + n * r.d;
    const S* dyr = dyp + n * r.d;
    const A m = mp[n], inv = rp[n];
    double sum_g = 0.0, sum_gx = 0.0;
    for (int64_t i = 0; i < r.d; ++i) {
      xhat[i] = (widen(xr[i]) - m) * inv;
      g[i] = widen(dyr[i]);
      sum_g += g[i];
      sum_gx += static_cast<double>(g[i]) * static_cast<double>(xhat[i]);
    }
    const A a = static_cast<A>(sum_g / static_cast<double>(r.d));
    const A b = static_cast<A>(sum_gx / static_cast<double>(r.d));
    S* dxr = dxp + n * r.d;
    for (int64_t i = 0; i < r.d; ++i) dxr[i] = narrow<S>(inv * (g[i] - a - xhat[i] * b));
    finish_dx_row(dxr, residual.defined() ? residual.data<S>() + n * r.d : nullptr,
                  row_max != nullptr ? row_max->data<float>() + n : nullptr, r.d, x.dtype());
  }
}

}  // namespace

void rmsnorm_forward(const Tensor& x, const Tensor& weight, double eps, Tensor& y, Tensor& rstd,
                     Tensor* row_max) {
  dispatch_storage(x.dtype(), "rmsnorm_forward",
                   [&](auto s) { rmsnorm_forward_impl<decltype(s)>(x, weight, eps, y, rstd, row_max); });
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd, Tensor& dx,
                      Tensor& dweight_accum, const Tensor& residual, Tensor* row_max) {
  dispatch_storage(x.dtype(), "rmsnorm_backward", [&](auto s) {
    rmsnorm_backward_impl<decltype(s)>(dy, x, weight, rstd, dx, dweight_accum, residual, row_max);
  });
}

void layernorm_forward(const Tensor& x, double eps, Tensor& y, Tensor& mean, Tensor& rstd,
                       Tensor* row_max) {
  dispatch_storage(x.dtype(), "layernorm_forward",
                   [&](auto s) { layernorm_forward_impl<decltype(s)>(x, eps, y, mean, rstd, row_max); });
}

void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                        Tensor& dx, const Tensor& residual, Tensor* row_max) {
  dispatch_storage(x.dtype(), "layernorm_backward", [&](auto s) {
    layernorm_backward_impl<decltype(s)>(dy, x, mean, rstd, dx, residual, row_max);
  });
}

}  // namespace coat::cpu
