// Where the scales of 128-block FP8 quantization (DeepSeek-V3 style: 1x128 groups for activations, 128x128
// blocks for weights) live: the exact layouts cuBLASLt's CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F and
// CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F modes read, so that the quantizers' scale_inv goes to the GEMM
// as it is. Index functions (host and device), shapes, and the argument checks both backends run.
//
// 1x128 (x [M,K], one scale per row and 128 consecutive columns): f32 [K/128, ld] with ld = round_up(M, 4),
//   scale of x[m, 128*kb .. 128*kb+127] at kb * ld + m. The rows are contiguous ("outer-dim-major", M
//   fastest): in cuBLASLt's column-major terms x is the K x M operand B of out^T = w x^T, and its scale
//   tensor is ceil(K/128) x M with M innermost. Rows m in [M, ld) are padding, written as 1.0f; ld is rounded
//   to 4 floats (16 bytes) as TransformerEngine's GEMM-ready layout does. matmul_fp8_block requires M % 4 == 0,
//   where that ld equals M, the only leading dimension every description of this layout agrees on.
// 128x128 (w [N,K], one scale per 128x128 block): f32 [N/128, ld] with ld = round_up(K/128, 4), scale of
//   block (nb, kb) = w[128*nb .. +127, 128*kb .. +127] at nb * ld + kb. The K blocks are contiguous, padded to
//   a multiple of 4 (16 bytes): cuBLASLt reads them with that leading dimension (an unpadded ld gives silently
//   wrong products when (K/128) % 4 != 0); the padding (kb in [K/128, ld)) is written as 1.0f.
// Both tensors hold scale_inv = 1 / scale, the dequantisation factor: value = decode(code) * scale_inv.
#pragma once

#include <cstdint>

#include "coat/backend/quantize_math.h"
#include "coat/core/host_device.h"
#include "coat/core/tensor.h"

namespace coat::fp8block {

/// Edge of a quantization block (and length of a 1x128 group).
inline constexpr int64_t kBlock = 128;
/// Leading dimensions of the scale tensors are multiples of this many floats (16 bytes).
inline constexpr int64_t kScaleLdMultiple = 4;
/// What the padding entries of a scale tensor hold (a neutral dequantisation factor).
inline constexpr float kPadScaleInv = 1.0f;

COAT_HOST_DEVICE constexpr int64_t round_up(int64_t v, int64_t multiple) {
  return (v + multiple - 1) / multiple * multiple;
}

/// ld of the 1x128 scales of a tensor with `rows` rows.
COAT_HOST_DEVICE constexpr int64_t scale_ld_1x128(int64_t rows) {
  return round_up(rows, kScaleLdMultiple);
}
/// Index of the scale of row `row`, group `kblock` (columns 128*kblock ..) in the 1x128 layout.
COAT_HOST_DEVICE constexpr int64_t scale_index_1x128(int64_t row, int64_t kblock, int64_t ld) {
  return kblock * ld + row;
}

/// ld of the 128x128 scales of a tensor with `cols` columns.
COAT_HOST_DEVICE constexpr int64_t scale_ld_128x128(int64_t cols) {
  return round_up(cols / kBlock, kScaleLdMultiple);
}
/// Index of the scale of block (nblock, kblock) in the 128x128 layout.
COAT_HOST_DEVICE constexpr int64_t scale_index_128x128(int64_t nblock, int64_t kblock, int64_t ld) {
  return nblock * ld + kblock;
}

/// Shape of the 1x128 scale tensor of x [M,K]: [K/128, round_up(M, 4)]. Checks that x is 2-D with K % 128 == 0.
inline Shape scale_shape_1x128(const Shape& x_shape, const char* op) {
  COAT_ARG_CHECK(x_shape.size() == 2, op, "input must be 2-D [M,K], got ", shape_str(x_shape),
                 ". HINT: reshape to [rows, K] first");
  COAT_ARG_CHECK(x_shape[1] % kBlock == 0, op, "K = ", x_shape[1], " (last dimension of ", shape_str(x_shape),
                 ") must be a multiple of ", kBlock, " for 1x128 groups. HINT: pad K");
  return Shape{x_shape[1] / kBlock, scale_ld_1x128(x_shape[0])};
}

/// Shape of the 128x128 scale tensor of w [N,K]: [N/128, round_up(K/128, 4)]. Checks that w is 2-D with N and
/// K multiples of 128.
inline Shape scale_shape_128x128(const Shape& w_shape, const char* op) {
  COAT_ARG_CHECK(w_shape.size() == 2, op, "input must be 2-D [N,K], got ", shape_str(w_shape));
  COAT_ARG_CHECK(w_shape[0] % kBlock == 0 && w_shape[1] % kBlock == 0, op, "both dimensions of ",
                 shape_str(w_shape), " must be multiples of ", kBlock, " for 128x128 blocks. HINT: pad them");
  return Shape{w_shape[0] / kBlock, scale_ld_128x128(w_shape[1])};
}

/// Shape of the scale tensor of codes of `shape` quantized in blocks of `block_rows` x 128: 1 (scale_shape_1x128)
/// or 128 (scale_shape_128x128); anything else is refused.
inline Shape scale_shape_blocked(const Shape& shape, int64_t block_rows, const char* op) {
  COAT_ARG_CHECK(block_rows == 1 || block_rows == kBlock, op, "blocks of ", block_rows, "x", kBlock,
                 " are not supported; expected 1x128 or 128x128");
  return block_rows == 1 ? scale_shape_1x128(shape, op) : scale_shape_128x128(shape, op);
}

// ---- argument checks of the backends' kernels (every tensor contiguous and on `device`) ----

inline void check_block_scales(const Tensor& scale_inv, const Shape& shape, const char* op, Device device) {
  fp8math::check_group_scales(scale_inv, shape, op, "scale_inv", device);
}

namespace detail {

/// scale_shape_1x128 or scale_shape_128x128.
using ScaleShapeFn = Shape (*)(const Shape&, const char*);

inline void check_quantize(const Tensor& x, const Tensor& codes, const Tensor& scale_inv, Device device,
                           const char* op, ScaleShapeFn scale_shape_of) {
  fp8math::check_high_precision_input(x, op);
  fp8math::check_contiguous_on(x, op, "input", device);
  const Shape scale_shape = scale_shape_of(x.shape(), op);
  fp8math::check_codes(codes, x.shape(), op, "codes", device);
  check_block_scales(scale_inv, scale_shape, op, device);
}

inline void check_dequantize(const Tensor& codes, const Tensor& scale_inv, const Tensor& out, Device device,
                             const char* op, ScaleShapeFn scale_shape_of) {
  COAT_ARG_CHECK(codes.defined(), op, "codes are undefined");
  fp8math::check_codes(codes, codes.shape(), op, "codes", device);
  check_block_scales(scale_inv, scale_shape_of(codes.shape(), op), op, device);
  fp8math::check_dequantize_output(out, codes.shape(), op, device);
}

}  // namespace detail

inline void check_quantize_1x128(const Tensor& x, const Tensor& codes, const Tensor& scale_inv, Device device) {
  detail::check_quantize(x, codes, scale_inv, device, "quantize_1x128", scale_shape_1x128);
}

inline void check_quantize_128x128(const Tensor& w, const Tensor& codes, const Tensor& scale_inv, Device device) {
  detail::check_quantize(w, codes, scale_inv, device, "quantize_128x128", scale_shape_128x128);
}

/// The block maxima [N/128, K/128] (f32, contiguous on `device`) a 128x128 quantisation of w [N,K] takes.
inline void check_block_maxima(const Tensor& maxima, const Shape& w_shape, const char* op, Device device) {
  const Shape blocks = scale_shape_128x128(w_shape, op);
  fp8math::check_group_scales(maxima, Shape{blocks[0], w_shape[1] / kBlock}, op, "block maxima", device);
}

inline void check_quantize_128x128_with_maxima(const Tensor& w, const Tensor& maxima, const Tensor& codes,
                                               const Tensor& scale_inv, Device device) {
  constexpr const char* op = "quantize_128x128_with_maxima";
  detail::check_quantize(w, codes, scale_inv, device, op, scale_shape_128x128);
  check_block_maxima(maxima, w.shape(), op, device);
}

/// maxima [N/128, K/128] (f32) and scale_inv [N/128, round_up(K/128, 4)] (f32), both contiguous on `device`.
inline void check_scale_inv_128x128_from_maxima(const Tensor& maxima, DType fmt, const Tensor& scale_inv,
                                                Device device) {
  constexpr const char* op = "scale_inv_128x128_from_maxima";
  COAT_ARG_CHECK(is_fp8(fmt), op, "format ", dtype_name(fmt), " is not an FP8 format (e4m3 or e5m2)");
  COAT_ARG_CHECK(maxima.dim() == 2, op, "block maxima must be 2-D [N/128, K/128], got ", maxima.str());
  fp8math::check_group_scales(maxima, maxima.shape(), op, "block maxima", device);
  check_block_scales(scale_inv, Shape{maxima.size(0), round_up(maxima.size(1), kScaleLdMultiple)}, op,
                     device);
}

inline void check_dequantize_1x128(const Tensor& codes, const Tensor& scale_inv, const Tensor& out,
                                   Device device) {
  detail::check_dequantize(codes, scale_inv, out, device, "dequantize_1x128", scale_shape_1x128);
}

inline void check_dequantize_128x128(const Tensor& codes, const Tensor& scale_inv, const Tensor& out,
                                     Device device) {
  detail::check_dequantize(codes, scale_inv, out, device, "dequantize_128x128", scale_shape_128x128);
}

}  // namespace coat::fp8block
