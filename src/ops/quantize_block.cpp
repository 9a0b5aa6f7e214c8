// 128-block FP8 quantization: validation and output allocation here, kernels in the backends.
#include "coat/ops/quantize_block.h"

#include "coat/backend/block_scale_layout.h"
#include "coat/backend/cpu/quantize_block.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/dispatch.h"
#include "coat/ops/reduce.h"
#ifdef COAT_WITH_CUDA
#include "coat/backend/cuda/quantize_block.h"
#endif

namespace coat::ops {
namespace {

constexpr int kBlock = static_cast<int>(fp8block::kBlock);

void check_input(const Tensor& x, DType fmt, const char* op) {
  COAT_ARG_CHECK(x.defined(), op, "undefined tensor");
  COAT_ARG_CHECK(x.dtype() == DType::F32 || x.dtype() == DType::BF16 || x.dtype() == DType::F16, op,
                 "input dtype ", dtype_name(x.dtype()), " not supported; expected f32, bf16 or f16");
  COAT_ARG_CHECK(is_fp8(fmt), op, "format ", dtype_name(fmt), " is not an FP8 format (e4m3 or e5m2)");
}

// The steps both quantizers share: x and fmt checked, the scale shape of x taken (which checks x's shape too),
// codes (x's shape, dtype fmt) and f32 scale_inv allocated on x's context, then run(contiguous x, q) calls the
// backend's kernel.
template <typename Run>
Fp8Blocked quantize_blocked(const Tensor& x, DType fmt, const char* op, int block_rows,
                            Shape (*scale_shape_of)(const Shape&, const char*), MemoryCategory category, Run run) {
  check_input(x, fmt, op);
  const Shape scale_shape = scale_shape_of(x.shape(), op);
  const Tensor cx = contiguous(x);
  Fp8Blocked q;
  q.block_rows = block_rows;
  q.block_cols = kBlock;
  q.codes = Tensor::empty(x.context(), x.shape(), fmt, category);
  q.scale_inv = Tensor::empty(x.context(), scale_shape, DType::F32, category);
  run(cx, q);
  return q;
}

}  // namespace

Fp8Blocked quantize_1x128(const Tensor& x, DType fmt, Fp8Saturation sat, MemoryCategory category) {
  constexpr const char* op = "quantize_1x128";
  return quantize_blocked(x, fmt, op, 1, fp8block::scale_shape_1x128, category,
                          [&](const Tensor& cx, Fp8Blocked& q) {
                            COAT_DISPATCH(op, cx.device(), cpu::quantize_1x128(cx, sat, q.codes, q.scale_inv),
                                          cuda::quantize_1x128(cx, sat, q.codes, q.scale_inv));
                          });
}

Fp8Blocked quantize_1x128_transposed(const Tensor& x, DType fmt, Fp8Saturation sat, MemoryCategory category) {
  constexpr const char* op = "quantize_1x128_transposed";
  check_input(x, fmt, op);
  COAT_ARG_CHECK(x.dim() == 2, op, "input must be 2-D [M,K], got ", shape_str(x.shape()),
                 ". HINT: reshape to [rows, K] first");
  const int64_t m = x.size(0), k = x.size(1);
  COAT_ARG_CHECK(m % kBlock == 0, op, "M = ", m, " (rows of ", shape_str(x.shape()), ") must be a multiple of ",
                 kBlock, ": the 1x128 groups of x^T run along the rows of x. HINT: pad the rows, or quantise a "
                 "materialised transpose with quantize_1x128");
  const Shape t_shape{k, m};
  const Shape scale_shape = fp8block::scale_shape_1x128(t_shape, op);
  const Tensor cx = contiguous(x);
  Fp8Blocked q;
  q.block_rows = 1;
  q.block_cols = kBlock;
  q.codes = Tensor::empty(x.context(), t_shape, fmt, category);
  q.scale_inv = Tensor::empty(x.context(), scale_shape, DType::F32, category);
  COAT_DISPATCH(op, cx.device(), cpu::quantize_1x128_transposed(cx, sat, q.codes, q.scale_inv),
                cuda::quantize_1x128_transposed(cx, sat, q.codes, q.scale_inv));
  return q;
}

Fp8BlockedPair quantize_1x128_pair(const Tensor& x, DType fmt, Fp8Saturation sat, MemoryCategory category) {
  constexpr const char* op = "quantize_1x128_pair";
  check_input(x, fmt, op);
  const Shape scale_shape = fp8block::scale_shape_1x128(x.shape(), op);
  const int64_t m = x.size(0), k = x.size(1);
  COAT_ARG_CHECK(m % kBlock == 0, op, "M = ", m, " (rows of ", shape_str(x.shape()), ") must be a multiple of ",
                 kBlock, ": the 1x128 groups of x^T run along the rows of x");
  const Shape t_shape{k, m};
  const Tensor cx = contiguous(x);
  const auto blocked = [&](const Shape& shape, const Shape& scales) {
    Fp8Blocked q;
    q.block_rows = 1;
    q.block_cols = kBlock;
    q.codes = Tensor::empty(x.context(), shape, fmt, category);
    q.scale_inv = Tensor::empty(x.context(), scales, DType::F32, category);
    return q;
  };
  Fp8BlockedPair p{blocked(x.shape(), scale_shape), blocked(t_shape, fp8block::scale_shape_1x128(t_shape, op))};
  COAT_DISPATCH(op, cx.device(),
                (cpu::quantize_1x128(cx, sat, p.rows.codes, p.rows.scale_inv),
                 cpu::quantize_1x128_transposed(cx, sat, p.transposed.codes, p.transposed.scale_inv)),
                cuda::quantize_1x128_pair(cx, sat, p.rows.codes, p.rows.scale_inv, p.transposed.codes,
                                          p.transposed.scale_inv));
  return p;
}

Fp8Blocked quantize_128x128(const Tensor& w, DType fmt, Fp8Saturation sat, MemoryCategory category) {
  constexpr const char* op = "quantize_128x128";
  return quantize_blocked(w, fmt, op, kBlock, fp8block::scale_shape_128x128, category,
                          [&](const Tensor& cw, Fp8Blocked& q) {
                            COAT_DISPATCH(op, cw.device(), cpu::quantize_128x128(cw, sat, q.codes, q.scale_inv),
                                          cuda::quantize_128x128(cw, sat, q.codes, q.scale_inv));
                          });
}

Tensor amax_128x128(const Tensor& w) {
  constexpr const char* op = "amax_128x128";
  check_input(w, DType::E4M3, op);
  const Shape blocks = fp8block::scale_shape_128x128(w.shape(), op);
  const int64_t nblocks = blocks[0], kblocks = w.size(1) / kBlock;
  if (nblocks == 0 || kblocks == 0)
    return Tensor::empty(w.context(), {nblocks, kblocks}, DType::F32, MemoryCategory::Workspace);
  // Maxima of the 1x128 row groups [N, K/128], then of 128 rows of each group column: amaxes pick an element
  // (no rounding), so this is the quantiser's own amax of every block.
  const Tensor rows = group_amax(w, kBlock);
  const Tensor columns = contiguous(rows.transpose(0, 1));  // [K/128, N]
  return contiguous(group_amax(columns, kBlock).transpose(0, 1));
}

Fp8Blocked quantize_128x128_with_maxima(const Tensor& w, const Tensor& maxima, DType fmt, Fp8Saturation sat,
                                        MemoryCategory category) {
  constexpr const char* op = "quantize_128x128_with_maxima";
  COAT_ARG_CHECK(maxima.defined() && maxima.device() == w.device(), op, "block maxima ", maxima.str(),
                 " must be on the device of w ", w.str());
  const Tensor cm = contiguous(maxima);
  return quantize_blocked(
      w, fmt, op, kBlock, fp8block::scale_shape_128x128, category, [&](const Tensor& cw, Fp8Blocked& q) {
        COAT_DISPATCH(op, cw.device(), cpu::quantize_128x128_with_maxima(cw, cm, sat, q.codes, q.scale_inv),
                      cuda::quantize_128x128_with_maxima(cw, cm, sat, q.codes, q.scale_inv));
      });
}

Tensor scale_inv_128x128_from_maxima(const Tensor& maxima, DType fmt, MemoryCategory category) {
  constexpr const char* op = "scale_inv_128x128_from_maxima";
  COAT_ARG_CHECK(maxima.defined() && maxima.dim() == 2, op, "block maxima must be 2-D [N/128, K/128], got ",
                 maxima.str());
  const Tensor cm = contiguous(maxima);
  Tensor scale_inv = Tensor::empty(
      maxima.context(), {maxima.size(0), fp8block::round_up(maxima.size(1), fp8block::kScaleLdMultiple)},
      DType::F32, category);
  COAT_DISPATCH(op, cm.device(), cpu::scale_inv_128x128_from_maxima(cm, fmt, scale_inv),
                cuda::scale_inv_128x128_from_maxima(cm, fmt, scale_inv));
  return scale_inv;
}

Fp8Blocked transpose_128x128(const Fp8Blocked& q) {
  constexpr const char* op = "transpose_128x128";
  COAT_ARG_CHECK(q.codes.defined() && q.scale_inv.defined(), op, "undefined codes or scale_inv");
  COAT_ARG_CHECK(q.block_rows == kBlock && q.block_cols == kBlock, op, "expected a 128x128-quantized tensor "
                 "(ops::quantize_128x128), got ", q.block_rows, "x", q.block_cols, " blocks");
  COAT_ARG_CHECK(is_fp8(q.codes.dtype()), op, "codes have dtype ", dtype_name(q.codes.dtype()),
                 ", expected e4m3 or e5m2");
  const Shape scale_shape = fp8block::scale_shape_128x128(q.codes.shape(), op);
  COAT_ARG_CHECK(q.scale_inv.dtype() == DType::F32 && q.scale_inv.shape() == scale_shape, op,
                 "scale_inv must be f32 of shape ", shape_str(scale_shape), ", got ", q.scale_inv.str());
  const int64_t n = q.codes.size(0), k = q.codes.size(1);
  const MemoryCategory category = q.codes.storage()->category();
  Fp8Blocked t;
  t.block_rows = kBlock;
  t.block_cols = kBlock;
  // Codes and scales move as integers of their width (U8, U32 views), so that every bit, NaN included, stays.
  t.codes = contiguous(q.codes.view_as(DType::U8).transpose(0, 1)).view_as(q.codes.dtype());
  // Block (nb, kb) of w is block (kb, nb) of w^T; the padding of the new rows holds the neutral 1.0f.
  t.scale_inv = full(q.codes.context(), fp8block::scale_shape_128x128({k, n}, op),
                     static_cast<double>(fp8block::kPadScaleInv), DType::F32, category);
  Tensor blocks = t.scale_inv.view_as(DType::U32).slice(1, 0, n / kBlock);
  copy_(blocks, q.scale_inv.view_as(DType::U32).slice(1, 0, k / kBlock).transpose(0, 1));
  return t;
}

Tensor dequantize(const Fp8Blocked& q, DType out_dtype) {
  constexpr const char* op = "dequantize_blocked";
  COAT_ARG_CHECK(out_dtype == DType::F32 || out_dtype == DType::BF16, op, "output dtype ", dtype_name(out_dtype),
                 " not supported; expected f32 or bf16");
  COAT_ARG_CHECK(q.codes.defined(), op, "undefined codes");
  const bool rowwise = q.block_rows == 1 && q.block_cols == kBlock;
  const bool blockwise = q.block_rows == kBlock && q.block_cols == kBlock;
  COAT_ARG_CHECK(rowwise || blockwise, op, "blocks of ", q.block_rows, "x", q.block_cols,
                 " are not supported; expected 1x128 or 128x128");
  Tensor out = Tensor::empty(q.codes.context(), q.codes.shape(), out_dtype);
  if (rowwise) {
    COAT_DISPATCH("dequantize_1x128", out.device(), cpu::dequantize_1x128(q.codes, q.scale_inv, out),
                  cuda::dequantize_1x128(q.codes, q.scale_inv, out));
  } else {
    COAT_DISPATCH("dequantize_128x128", out.device(), cpu::dequantize_128x128(q.codes, q.scale_inv, out),
                  cuda::dequantize_128x128(q.codes, q.scale_inv, out));
  }
  return out;
}

}  // namespace coat::ops
