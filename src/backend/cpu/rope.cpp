// CPU reference: rotary position embedding, templated on the element type.
#include "coat/backend/cpu/rope.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "coat/backend/cpu/row_max.h"
#include "coat/backend/cpu/typed_storage.h"
#include "coat/core/float_formats.h"

namespace coat::cpu {
namespace {

template <typename S>
void rope_impl(const Tensor& x, std::span<const double> inv_freq, int64_t position_offset, bool inverse,
               int64_t rotary, Tensor& y, Tensor* row_max) {
  using A = acc_t<S>;
  const int64_t b_count = x.size(0), t_count = x.size(1), heads = x.size(2), dh = x.size(3);
  const int64_t half = dh / 2;
  // cos/sin of every (position, frequency) pair, [T, Dh/2].
  std::vector<A> cos_t(static_cast<size_t>(t_count * half)), sin_t(static_cast<size_t>(t_count * half));
  const double sign = inverse ? -1.0 : 1.0;
  for (int64_t i = 0; i < half; ++i) {
    for (int64_t t = 0; t < t_count; ++t) {
      const double angle = static_cast<double>(t + position_offset) * inv_freq[static_cast<size_t>(i)];
      cos_t[t * half + i] = static_cast<A>(std::cos(angle));
      sin_t[t * half + i] = static_cast<A>(sign * std::sin(angle));
    }
  }
  // Each pair is read before it is written, so y may be x.
  const S* xp = x.data<S>();
  S* yp = y.data<S>();
  const bool in_place = xp == yp;
  for (int64_t b = 0; b < b_count; ++b) {
    for (int64_t t = 0; t < t_count; ++t) {
      const A* c = cos_t.data() + t * half;
      const A* s = sin_t.data() + t * half;
      for (int64_t h = 0; h < rotary; ++h) {
        const int64_t base = ((b * t_count + t) * heads + h) * dh;
        const S* xr = xp + base;
        S* yr = yp + base;
        for (int64_t i = 0; i < half; ++i) {
          const A lo = widen(xr[i]), hi = widen(xr[i + half]);
          yr[i] = narrow<S>(lo * c[i] - hi * s[i]);
          yr[i + half] = narrow<S>(hi * c[i] + lo * s[i]);
        }
      }
      if (!in_place && rotary < heads) {  // the unrotated heads, bit for bit
        const int64_t first = ((b * t_count + t) * heads + rotary) * dh;
        std::copy(xp + first, xp + first + (heads - rotary) * dh, yp + first);
      }
      if (row_max != nullptr)
        row_max->data<float>()[b * t_count + t] = stored_row_max(yp + (b * t_count + t) * heads * dh, heads * dh);
    }
  }
}

}  // namespace

void rope(const Tensor& x, std::span<const double> inv_freq, int64_t position_offset, bool inverse,
          int64_t rotary_heads, Tensor& y, Tensor* row_max) {
  dispatch_storage(x.dtype(), "rope", [&](auto s) {
    rope_impl<decltype(s)>(x, inv_freq, position_offset, inverse, rotary_heads, y, row_max);
  });
}

}  // namespace coat::cpu
