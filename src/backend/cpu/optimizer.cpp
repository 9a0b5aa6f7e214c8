// CPU reference: the FP32 AdamW update, the double-accumulated sum of squares and the non-finite flag.
#include "coat/backend/cpu/optimizer.h"

#include <cmath>

#include "coat/backend/element_access.h"

namespace coat::cpu {

void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const adamw_math::AdamWScalars& s) {
  const int64_t n = param.numel();
  float* p = param.data<float>();
  const float* g = grad.data<float>();
  float* pm = m.data<float>();
  float* pv = v.data<float>();
  for (int64_t i = 0; i < n; ++i) adamw_math::adamw_update(p[i], g[i], pm[i], pv[i], s);
}

void sum_squares(const Tensor& x, Tensor& out) {
  const int64_t n = x.numel();
  const void* p = x.data_ptr();
  const DType t = x.dtype();
  double total = 0.0;
  if (t == DType::F32) {
    const float* f = static_cast<const float*>(p);
    for (int64_t i = 0; i < n; ++i) {
      const double e = f[i];
      total += e * e;
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const double e = load_as_double(p, i, t);
      total += e * e;
    }
  }
  out.data<double>()[0] = total;
}

void flag_nonfinite(Tensor& flag, const Tensor& x) {
  const int64_t n = x.numel();
  const void* p = x.data_ptr();
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(load_as_double(p, i, x.dtype()))) {
      flag.data<int32_t>()[0] = 1;
      return;
    }
  }
}

}  // namespace coat::cpu
