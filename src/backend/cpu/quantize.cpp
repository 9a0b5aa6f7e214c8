// CPU reference of FP8 quantization: plain loops over the shared scalar math of quantize_math.h, which the
// CUDA kernels run too, so the two backends give the same bytes.
#include "coat/backend/cpu/quantize.h"

#include <algorithm>

#include "coat/backend/quantize_math.h"

namespace coat::cpu {
namespace {

using namespace coat::fp8math;

/// Tile edge of the blocked transpose: a 64x64 tile of codes stays in L1 while it is written both ways.
constexpr int64_t kTransposeTile = 64;

template <DType In>
uint32_t amax_key_of(const storage_t<In>* x, int64_t n) {
  uint32_t key = 0;
  for (int64_t i = 0; i < n; ++i) key = max_key(key, amax_key(load_float<In>(x[i])));
  return key;
}

template <DType In>
const storage_t<In>* input_data(const Tensor& x) {
  return static_cast<const storage_t<In>*>(x.data_ptr());
}

uint8_t* code_data(const Tensor& codes) {
  return static_cast<uint8_t*>(codes.data_ptr());
}

float read_scalar(const Tensor& t) {
  return *static_cast<const float*>(t.data_ptr());
}

}  // namespace

void group_amax(const Tensor& x, int64_t group_size, Tensor& out_amax) {
  check_group_amax(x, group_size, out_amax, Device::cpu());
  const int64_t groups = x.numel() / group_size;
  float* out = out_amax.data<float>();
  dispatch_float_dtype(x.dtype(), "group_amax", [&](auto in) {
    constexpr DType In = decltype(in)::value;
    const storage_t<In>* xp = input_data<In>(x);
    for (int64_t g = 0; g < groups; ++g)
      out[g] = amax_from_key(amax_key_of<In>(xp + g * group_size, group_size));
  });
}

void tensor_amax(const Tensor& x, Tensor& out_amax) {
  check_tensor_amax(x, out_amax, Device::cpu());
  dispatch_float_dtype(x.dtype(), "tensor_amax", [&](auto in) {
    constexpr DType In = decltype(in)::value;
    *out_amax.data<float>() = amax_from_key(amax_key_of<In>(input_data<In>(x), x.numel()));
  });
}

void compute_scale(const Tensor& amax, DType fmt, Tensor& scale, Tensor& scale_inv) {
  check_compute_scale(amax, fmt, scale, scale_inv, Device::cpu());
  const float s = scale_from_amax(read_scalar(amax), fp8_max(fmt));
  *scale.data<float>() = s;
  *scale_inv.data<float>() = scale_inv_from_scale(s);
}

void compute_scale_from_maxima(const Tensor& maxima, DType fmt, Tensor& scale, Tensor& scale_inv) {
  check_compute_scale_from_maxima(maxima, fmt, scale, scale_inv, Device::cpu());
  const float amax = amax_from_key(amax_key_of<DType::F32>(maxima.data<const float>(), maxima.numel()));
  const float s = scale_from_amax(amax, fp8_max(fmt));
  *scale.data<float>() = s;
  *scale_inv.data<float>() = scale_inv_from_scale(s);
}

void quantize_per_tensor(const Tensor& x, const Tensor& scale, Fp8Saturation sat, Tensor& codes) {
  check_quantize_per_tensor(x, scale, codes, Device::cpu());
  const int64_t n = x.numel();
  const float s = read_scalar(scale);
  uint8_t* out = code_data(codes);
  dispatch_float_dtype(x.dtype(), "quantize_per_tensor", [&](auto in) {
    constexpr DType In = decltype(in)::value;
    dispatch_fp8_format(codes.dtype(), "quantize_per_tensor", [&](auto fmt) {
      constexpr DType Fmt = decltype(fmt)::value;
      const storage_t<In>* xp = input_data<In>(x);
      for (int64_t i = 0; i < n; ++i) out[i] = quantize_value<Fmt>(load_float<In>(xp[i]), s, sat);
    });
  });
}

void dequantize_per_tensor(const Tensor& codes, const Tensor& scale_inv, Tensor& out) {
  check_dequantize_per_tensor(codes, scale_inv, out, Device::cpu());
  const int64_t n = codes.numel();
  const float si = read_scalar(scale_inv);
  const uint8_t* cp = code_data(codes);
  dispatch_fp8_format(codes.dtype(), "dequantize_per_tensor", [&](auto fmt) {
    constexpr DType Fmt = decltype(fmt)::value;
    dispatch_float_dtype(out.dtype(), "dequantize_per_tensor", [&](auto out_tag) {
      constexpr DType Out = decltype(out_tag)::value;
      storage_t<Out>* op = out.data<storage_t<Out>>();
      for (int64_t i = 0; i < n; ++i) op[i] = store_float<Out>(dequantize_value<Fmt>(cp[i], si));
    });
  });
}

void quantize_transpose_per_tensor(const Tensor& x, const Tensor& scale, Fp8Saturation sat, Tensor& codes,
                                   Tensor& codes_t) {
  check_quantize_transpose(x, scale, codes, codes_t, Device::cpu());
  const int64_t rows = x.size(0), cols = x.size(1);
  const float s = read_scalar(scale);
  uint8_t* out = code_data(codes);
  uint8_t* out_t = code_data(codes_t);
  dispatch_float_dtype(x.dtype(), "quantize_transpose_per_tensor", [&](auto in) {
    constexpr DType In = decltype(in)::value;
    dispatch_fp8_format(codes.dtype(), "quantize_transpose_per_tensor", [&](auto fmt) {
      constexpr DType Fmt = decltype(fmt)::value;
      const storage_t<In>* xp = input_data<In>(x);
      for (int64_t r0 = 0; r0 < rows; r0 += kTransposeTile) {
        for (int64_t c0 = 0; c0 < cols; c0 += kTransposeTile) {
          const int64_t r1 = std::min(rows, r0 + kTransposeTile), c1 = std::min(cols, c0 + kTransposeTile);
          for (int64_t r = r0; r < r1; ++r) {
            for (int64_t c = c0; c < c1; ++c) {
              const uint8_t code = quantize_value<Fmt>(load_float<In>(xp[r * cols + c]), s, sat);
              out[r * cols + c] = code;
              out_t[c * rows + r] = code;
            }
          }
        }
      }
    });
  });
}

void quantize_per_group(const Tensor& x, int64_t group_size, Fp8Saturation sat, Tensor& codes,
                        Tensor& scale_inv) {
  check_quantize_per_group(x, group_size, codes, scale_inv, Device::cpu());
  const int64_t groups = x.numel() / group_size;
  uint8_t* out = code_data(codes);
  float* si = scale_inv.data<float>();
  dispatch_float_dtype(x.dtype(), "quantize_per_group", [&](auto in) {
    constexpr DType In = decltype(in)::value;
    dispatch_fp8_format(codes.dtype(), "quantize_per_group", [&](auto fmt) {
      constexpr DType Fmt = decltype(fmt)::value;
      for (int64_t g = 0; g < groups; ++g) {
        const storage_t<In>* xg = input_data<In>(x) + g * group_size;
        const float s = scale_from_amax(amax_from_key(amax_key_of<In>(xg, group_size)), fp8_max(Fmt));
        si[g] = scale_inv_from_scale(s);
        uint8_t* og = out + g * group_size;
        for (int64_t j = 0; j < group_size; ++j) og[j] = quantize_value<Fmt>(load_float<In>(xg[j]), s, sat);
      }
    });
  });
}

void dequantize_per_group(const Tensor& codes, const Tensor& scale_inv, int64_t group_size, Tensor& out) {
  check_dequantize_per_group(codes, scale_inv, group_size, out, Device::cpu());
  const int64_t groups = codes.numel() / group_size;
  const uint8_t* cp = code_data(codes);
  const float* si = scale_inv.data<const float>();
  dispatch_fp8_format(codes.dtype(), "dequantize_per_group", [&](auto fmt) {
    constexpr DType Fmt = decltype(fmt)::value;
    dispatch_float_dtype(out.dtype(), "dequantize_per_group", [&](auto out_tag) {
      constexpr DType Out = decltype(out_tag)::value;
      storage_t<Out>* op = out.data<storage_t<Out>>();
      for (int64_t g = 0; g < groups; ++g) {
        for (int64_t j = 0; j < group_size; ++j) {
          const int64_t i = g * group_size + j;
          op[i] = store_float<Out>(dequantize_value<Fmt>(cp[i], si[g]));
        }
      }
    });
  });
}

}  // namespace coat::cpu
