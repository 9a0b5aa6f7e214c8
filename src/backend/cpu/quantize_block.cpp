// CPU reference of 128-block FP8 quantization: plain loops over the shared scalar math of quantize_math.h
// (which the CUDA kernels run too, so both backends give the same bytes) and the cuBLASLt scale layouts of
// block_scale_layout.h.
#include "coat/backend/cpu/quantize_block.h"

#include "coat/backend/block_scale_layout.h"
#include "coat/backend/quantize_math.h"

namespace coat::cpu {
namespace {

using namespace coat::fp8math;
using fp8block::kBlock;

template <DType In>
const storage_t<In>* input_data(const Tensor& x) {
  return static_cast<const storage_t<In>*>(x.data_ptr());
}

uint8_t* code_data(const Tensor& codes) {
  return static_cast<uint8_t*>(codes.data_ptr());
}

/// The checks of quantize_1x128_transposed: x [M,K] contiguous with M % 128 == 0, codes [K,M] and the 1x128
/// scales of [K,M], all on the CPU.
void check_quantize_transposed(const Tensor& x, const Tensor& codes, const Tensor& scale_inv) {
  constexpr const char* op = "quantize_1x128_transposed";
  check_high_precision_input(x, op);
  check_contiguous_on(x, op, "input", Device::cpu());
  COAT_ARG_CHECK(x.dim() == 2 && x.size(0) % kBlock == 0, op, "input ", shape_str(x.shape()),
                 " must be 2-D [M,K] with M a multiple of ", kBlock, " (the groups of x^T run along M)");
  const Shape t_shape{x.size(1), x.size(0)};
  check_codes(codes, t_shape, op, "codes", Device::cpu());
  fp8block::check_block_scales(scale_inv, fp8block::scale_shape_1x128(t_shape, op), op, Device::cpu());
}

/// scale_inv of every element of codes [rows, cols] through `scale_of(row, col)`, into out.
template <typename ScaleOf>
void dequantize_blocks(const Tensor& codes, Tensor& out, const char* op, ScaleOf scale_of) {
  const int64_t rows = codes.size(0), cols = codes.size(1);
  const uint8_t* cp = code_data(codes);
  dispatch_fp8_format(codes.dtype(), op, [&](auto fmt) {
    constexpr DType Fmt = decltype(fmt)::value;
    dispatch_float_dtype(out.dtype(), op, [&](auto out_tag) {
      constexpr DType Out = decltype(out_tag)::value;
      storage_t<Out>* op_data = out.data<storage_t<Out>>();
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          const int64_t i = r * cols + c;
          op_data[i] = store_float<Out>(dequantize_value<Fmt>(cp[i], scale_of(r, c)));
        }
      }
    });
  });
}

}  // namespace

void quantize_1x128(const Tensor& x, Fp8Saturation sat, Tensor& codes, Tensor& scale_inv) {
  fp8block::check_quantize_1x128(x, codes, scale_inv, Device::cpu());
  const int64_t rows = x.size(0), cols = x.size(1), kblocks = cols / kBlock;
  const int64_t ld = fp8block::scale_ld_1x128(rows);
  uint8_t* out = code_data(codes);
  float* si = scale_inv.data<float>();
  dispatch_float_dtype(x.dtype(), "quantize_1x128", [&](auto in) {
    constexpr DType In = decltype(in)::value;
    dispatch_fp8_format(codes.dtype(), "quantize_1x128", [&](auto fmt) {
      constexpr DType Fmt = decltype(fmt)::value;
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t kb = 0; kb < kblocks; ++kb) {
          const int64_t first = r * cols + kb * kBlock;
          const storage_t<In>* xg = input_data<In>(x) + first;
          uint32_t key = 0;
          for (int64_t j = 0; j < kBlock; ++j) key = max_key(key, amax_key(load_float<In>(xg[j])));
          const float s = scale_from_amax(amax_from_key(key), fp8_max(Fmt));
          si[fp8block::scale_index_1x128(r, kb, ld)] = scale_inv_from_scale(s);
          for (int64_t j = 0; j < kBlock; ++j) out[first + j] = quantize_value<Fmt>(load_float<In>(xg[j]), s, sat);
        }
      }
    });
  });
  for (int64_t kb = 0; kb < kblocks; ++kb)
    for (int64_t r = rows; r < ld; ++r) si[fp8block::scale_index_1x128(r, kb, ld)] = fp8block::kPadScaleInv;
}

void quantize_1x128_transposed(const Tensor& x, Fp8Saturation sat, Tensor& codes, Tensor& scale_inv) {
  check_quantize_transposed(x, codes, scale_inv);
  // Group (row k of x^T, block mb) = x[128*mb .. 128*mb+127, k]; codes[k, m] = q(x[m, k]).
  const int64_t rows = x.size(0), cols = x.size(1), mblocks = rows / kBlock;
  const int64_t ld = fp8block::scale_ld_1x128(cols);
  uint8_t* out = code_data(codes);
  float* si = scale_inv.data<float>();
  dispatch_float_dtype(x.dtype(), "quantize_1x128_transposed", [&](auto in) {
    constexpr DType In = decltype(in)::value;
    dispatch_fp8_format(codes.dtype(), "quantize_1x128_transposed", [&](auto fmt) {
      constexpr DType Fmt = decltype(fmt)::value;
      const storage_t<In>* xp = input_data<In>(x);
      for (int64_t mb = 0; mb < mblocks; ++mb) {
        for (int64_t k = 0; k < cols; ++k) {
          const storage_t<In>* xg = xp + mb * kBlock * cols + k;  // x[128*mb, k]; step `cols` down the group
          uint32_t key = 0;
          for (int64_t j = 0; j < kBlock; ++j) key = max_key(key, amax_key(load_float<In>(xg[j * cols])));
          const float s = scale_from_amax(amax_from_key(key), fp8_max(Fmt));
          si[fp8block::scale_index_1x128(k, mb, ld)] = scale_inv_from_scale(s);
          uint8_t* cg = out + k * rows + mb * kBlock;
          for (int64_t j = 0; j < kBlock; ++j) cg[j] = quantize_value<Fmt>(load_float<In>(xg[j * cols]), s, sat);
        }
      }
    });
  });
  for (int64_t mb = 0; mb < mblocks; ++mb)
    for (int64_t k = cols; k < ld; ++k) si[fp8block::scale_index_1x128(k, mb, ld)] = fp8block::kPadScaleInv;
}

namespace {

/// quantize_128x128's loops: each block's amax from `maxima` ([N/128][K/128]) where given, else from w.
void quantize_blocks_128x128(const Tensor& w, const float* maxima, Fp8Saturation sat, Tensor& codes,
                             Tensor& scale_inv) {
  const int64_t cols = w.size(1), nblocks = w.size(0) / kBlock, kblocks = cols / kBlock;
  const int64_t ld = fp8block::scale_ld_128x128(cols);
  uint8_t* out = code_data(codes);
  float* si = scale_inv.data<float>();
  dispatch_float_dtype(w.dtype(), "quantize_128x128", [&](auto in) {
    constexpr DType In = decltype(in)::value;
    dispatch_fp8_format(codes.dtype(), "quantize_128x128", [&](auto fmt) {
      constexpr DType Fmt = decltype(fmt)::value;
      const storage_t<In>* wp = input_data<In>(w);
      for (int64_t nb = 0; nb < nblocks; ++nb) {
        for (int64_t kb = 0; kb < kblocks; ++kb) {
          const int64_t corner = nb * kBlock * cols + kb * kBlock;  // element (128*nb, 128*kb)
          uint32_t key = 0;
          if (maxima == nullptr) {
            for (int64_t r = 0; r < kBlock; ++r)
              for (int64_t c = 0; c < kBlock; ++c)
                key = max_key(key, amax_key(load_float<In>(wp[corner + r * cols + c])));
          }
          const float amax = maxima != nullptr ? maxima[nb * kblocks + kb] : amax_from_key(key);
          const float s = scale_from_amax(amax, fp8_max(Fmt));
          si[fp8block::scale_index_128x128(nb, kb, ld)] = scale_inv_from_scale(s);
          for (int64_t r = 0; r < kBlock; ++r) {
            for (int64_t c = 0; c < kBlock; ++c) {
              const int64_t i = corner + r * cols + c;
              out[i] = quantize_value<Fmt>(load_float<In>(wp[i]), s, sat);
            }
          }
        }
      }
    });
  });
  for (int64_t nb = 0; nb < nblocks; ++nb)
    for (int64_t kb = kblocks; kb < ld; ++kb) si[fp8block::scale_index_128x128(nb, kb, ld)] = fp8block::kPadScaleInv;
}

}  // namespace

void quantize_128x128(const Tensor& w, Fp8Saturation sat, Tensor& codes, Tensor& scale_inv) {
  fp8block::check_quantize_128x128(w, codes, scale_inv, Device::cpu());
  quantize_blocks_128x128(w, nullptr, sat, codes, scale_inv);
}

void quantize_128x128_with_maxima(const Tensor& w, const Tensor& maxima, Fp8Saturation sat, Tensor& codes,
                                  Tensor& scale_inv) {
  fp8block::check_quantize_128x128_with_maxima(w, maxima, codes, scale_inv, Device::cpu());
  quantize_blocks_128x128(w, maxima.data<const float>(), sat, codes, scale_inv);
}

void scale_inv_128x128_from_maxima(const Tensor& maxima, DType fmt, Tensor& scale_inv) {
  fp8block::check_scale_inv_128x128_from_maxima(maxima, fmt, scale_inv, Device::cpu());
  const int64_t nblocks = maxima.size(0), kblocks = maxima.size(1), ld = scale_inv.size(1);
  const float* m = maxima.data<const float>();
  float* si = scale_inv.data<float>();
  for (int64_t nb = 0; nb < nblocks; ++nb) {
    for (int64_t kb = 0; kb < ld; ++kb) {
      si[fp8block::scale_index_128x128(nb, kb, ld)] =
          kb < kblocks ? scale_inv_from_scale(scale_from_amax(m[nb * kblocks + kb], fp8_max(fmt)))
                       : fp8block::kPadScaleInv;
    }
  }
}

void dequantize_1x128(const Tensor& codes, const Tensor& scale_inv, Tensor& out) {
  fp8block::check_dequantize_1x128(codes, scale_inv, out, Device::cpu());
  const int64_t ld = fp8block::scale_ld_1x128(codes.size(0));
  const float* si = scale_inv.data<const float>();
  dequantize_blocks(codes, out, "dequantize_1x128",
                    [&](int64_t r, int64_t c) { return si[fp8block::scale_index_1x128(r, c / kBlock, ld)]; });
}

void dequantize_128x128(const Tensor& codes, const Tensor& scale_inv, Tensor& out) {
  fp8block::check_dequantize_128x128(codes, scale_inv, out, Device::cpu());
  const int64_t ld = fp8block::scale_ld_128x128(codes.size(1));
  const float* si = scale_inv.data<const float>();
  dequantize_blocks(codes, out, "dequantize_128x128", [&](int64_t r, int64_t c) {
    return si[fp8block::scale_index_128x128(r / kBlock, c / kBlock, ld)];
  });
}

}  // namespace coat::cpu
