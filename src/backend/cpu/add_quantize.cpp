// CPU reference of the fused residual add + FP8 group quantisation: per group, the sums (stored, then read
// back as stored), their amax key, the scale, the codes; the scalar math of quantize_math.h throughout.
#include "coat/backend/cpu/add_quantize.h"

#include "coat/backend/quantize_math.h"

namespace coat::cpu {

using namespace coat::fp8math;

void add_quantize_per_group(const Tensor& a, const Tensor& b, int64_t group_size, Fp8Saturation sat, Tensor& sum,
                            Tensor& codes, Tensor& scale_inv) {
  check_add_quantize_per_group(a, b, group_size, sum, codes, scale_inv, Device::cpu());
  const int64_t groups = a.numel() / group_size;
  dispatch_float_dtype(a.dtype(), "add_quantize_per_group", [&](auto t) {
    constexpr DType T = decltype(t)::value;
    using S = storage_t<T>;
    const S* ap = static_cast<const S*>(a.data_ptr());
    const S* bp = static_cast<const S*>(b.data_ptr());
    S* sp = static_cast<S*>(sum.data_ptr());
    uint8_t* cp = static_cast<uint8_t*>(codes.data_ptr());
    float* sip = scale_inv.data<float>();
    dispatch_fp8_format(codes.dtype(), "add_quantize_per_group", [&](auto f) {
      constexpr DType Fmt = decltype(f)::value;
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t first = g * group_size;
        uint32_t key = 0;
        for (int64_t i = first; i < first + group_size; ++i) {
          // float addition rounded to T equals ops::add's double addition rounded once to T: float carries
          // 24 >= 2 * 11 + 2 bits, so rounding twice (to float, then to bf16 / f16) is innocuous.
          sp[i] = store_float<T>(add_rn(load_float<T>(ap[i]), load_float<T>(bp[i])));
          key = max_key(key, amax_key(load_float<T>(sp[i])));
        }
        const float scale = scale_from_amax(amax_from_key(key), fp8_max(Fmt));
        sip[g] = scale_inv_from_scale(scale);
        for (int64_t i = first; i < first + group_size; ++i)
          cp[i] = quantize_value<Fmt>(load_float<T>(sp[i]), scale, sat);
      }
    });
  });
}

}  // namespace coat::cpu
