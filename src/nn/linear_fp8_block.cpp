#include "coat/nn/linear_fp8_block.h"

#include "coat/backend/block_scale_layout.h"
#include "coat/core/nvtx.h"
#include "coat/nn/rows.h"
#include "coat/ops/matmul_fp8_block.h"
#include "coat/ops/quantize_block.h"

namespace coat::nn {

namespace {

constexpr const char* kOp = "linear_fp8_block";
constexpr int64_t kBlock = fp8block::kBlock;

/// x [..., in] against weight [out, in] (its shape `w`): the shapes 128-block FP8 GEMMs take, or an error
/// naming the layer.
void check_operands(const autograd::Var& x, const Parameter& weight, const Shape& w) {
  COAT_ARG_CHECK(w.size() == 2, kOp, "weight '", weight.name, "' must be 2-D, got ", shape_str(w));
  COAT_ARG_CHECK(x.value.dim() >= 1 && x.value.size(-1) == w[1], kOp, "input ", shape_str(x.shape()),
                 " does not match weight '", weight.name, "' of shape ", shape_str(w));
  COAT_ARG_CHECK(x.value.dtype() == DType::BF16, kOp, "input of weight '", weight.name, "' has dtype ",
                 dtype_name(x.value.dtype()), "; the FP8 recipes compute in bf16");
  const int64_t in = w[1], out = w[0], rows = in > 0 ? x.value.numel() / in : 0;
  COAT_ARG_CHECK(rows % kBlock == 0 && in % kBlock == 0 && out % kBlock == 0, kOp, "weight '", weight.name,
                 "' [", out, ", ", in, "] with ", rows,
                 " input rows: 128-block FP8 GEMMs need all three to be multiples of ", kBlock,
                 " (keep this layer in BF16: precision.bf16_layers, or change the hidden sizes or the "
                 "batch / sequence length)");
}

Shape with_last(Shape shape, int64_t last) {
  shape.back() = last;
  return shape;
}

}  // namespace

autograd::Var linear_fp8_block(autograd::Tape& tape, const autograd::Var& x, Parameter& weight,
                               Fp8BlockWeights& weights, bool save_fp8_input) {
  const NvtxRange range(kOp);
  // Checked before anything is quantised; a weight without values here (a sharded unit gathered as FP8 codes:
  // dist/fp8_gather.h) has its shape in its gathered copy.
  const Tensor& source = weight.quantization_source();
  check_operands(x, weight, source.defined() ? source.shape() : weights.get(weight).w.codes.shape());
  const ops::Fp8Blocked& wq = weights.get(weight).w;
  const Tensor x2 = as_rows(x.value);
  const int64_t out = wq.codes.size(0);
  const Shape in_shape = x.shape();
  // The wgrad's x^T groups made now from the same read as fprop's (only when a wgrad will run).
  const bool keep_fp8 = save_fp8_input && tape.grad_enabled() && weight.needs_grad();
  Tensor y;
  std::vector<Tensor> saved;
  {
    // fprop: 1x128 groups of x along `in` (the GEMM's K) against W's 128x128 blocks; the codes die here.
    if (keep_fp8) {
      ops::Fp8BlockedPair xq = ops::quantize_1x128_pair(x2, DType::E4M3);
      y = ops::matmul_fp8_block(xq.rows, wq, DType::BF16).reshape(with_last(in_shape, out));
      saved = {std::move(xq.transposed.codes), std::move(xq.transposed.scale_inv)};
    } else {
      y = ops::matmul_fp8_block(ops::quantize_1x128(x2, DType::E4M3), wq, DType::BF16)
              .reshape(with_last(in_shape, out));
      saved = {x2};
    }
  }
  Parameter* p = &weight;
  Fp8BlockWeights* cache = &weights;
  const bool want_dx = x.requires_grad();
  return tape.record(
      kOp, std::move(y), {x}, std::move(saved),
      [p, cache, in_shape, want_dx, keep_fp8](const Tensor& dy, const std::vector<Tensor>& saved) -> autograd::Grads {
        const Tensor dy2 = as_rows(dy);
        const bool wgrad = p->grad.defined();
        // dy in 1x128 groups along `out` (dgrad) and along the tokens (wgrad): from one read when both run.
        ops::Fp8BlockedPair dyq;
        if (wgrad && want_dx) {
          dyq = ops::quantize_1x128_pair(dy2, DType::E5M2);
        } else if (wgrad) {
          dyq.transposed = ops::quantize_1x128_transposed(dy2, DType::E5M2);
        } else if (want_dx) {
          dyq.rows = ops::quantize_1x128(dy2, DType::E5M2);
        }
        if (wgrad) {
          // wgrad, K = the tokens: dy^T [out, rows] and x^T [in, rows] each in 1x128 groups along the tokens (a
          // weight gradient sums over them), the "1D x 1D" block-scaled product, FP32 into the gradient. The
          // transposed quantizer reads dy and x as they are: no high-precision copy of either transpose.
          ops::Fp8Blocked xt;
          if (keep_fp8) {
            xt = ops::Fp8Blocked{saved[0], saved[1], 1, static_cast<int>(kBlock)};
          } else {
            xt = ops::quantize_1x128_transposed(saved[0], DType::E4M3);
          }
          Tensor g = p->grad;
          ops::matmul_fp8_block(dyq.transposed, xt, g, /*accumulate=*/!p->grad_unset);  // [out, in]
          p->grad_unset = false;
        }
        if (!want_dx) return {Tensor()};
        // dgrad: 1x128 groups of dy along `out` against W^T's 128x128 blocks.
        return {ops::matmul_fp8_block(dyq.rows, cache->get(*p).w_t, DType::BF16).reshape(in_shape)};
      },
      /*force_grad=*/weight.needs_grad());
}

}  // namespace coat::nn
