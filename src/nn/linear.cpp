#include "coat/nn/linear.h"

#include "coat/core/nvtx.h"
#include "coat/nn/rows.h"
#include "coat/ops/copy.h"
#include "coat/ops/matmul.h"
#include "coat/ops/matmul_fp8.h"
#include "coat/ops/quantize.h"

namespace coat::nn {

namespace {
Shape with_last(Shape shape, int64_t last) {
  shape.back() = last;
  return shape;
}

/// x [..., in] against weight [out, in] (its shape `w`), for both linears; `op` names the function in messages.
void check_operands(const char* op, const autograd::Var& x, const Parameter& weight, const Shape& w) {
  COAT_ARG_CHECK(w.size() == 2, op, "weight '", weight.name, "' must be 2-D, got ", shape_str(w));
  COAT_ARG_CHECK(x.value.dim() >= 1 && x.value.size(-1) == w[1], op, "input ", shape_str(x.shape()),
                 " does not match weight '", weight.name, "' of shape ", shape_str(w));
}
}  // namespace

autograd::Var linear(autograd::Tape& tape, const autograd::Var& x, Parameter& weight, OutputRemake* remake) {
  const NvtxRange range("linear");
  COAT_ARG_CHECK(weight.value.defined(), "linear", "weight '", weight.name,
                 "' has no compute copy: the model keeps only FP8 copies of it under its precision recipe");
  check_operands("linear", x, weight, weight.value.shape());
  const Tensor& w = weight.value;
  const Tensor x2 = as_rows(x.value);
  const Shape in_shape = x.shape();
  Tensor y = ops::matmul(x2, w, false, true).reshape(with_last(in_shape, w.size(0)));
  Parameter* p = &weight;
  if (remake != nullptr && tape.grad_enabled()) {
    const Shape out_shape = y.shape();
    *remake = {{x2}, [p, out_shape](const std::vector<Tensor>& in) {
                 return ops::matmul(in[0], p->value, false, true).reshape(out_shape);
               }};
  }
  const bool want_dx = x.requires_grad();
  return tape.record(
      "linear", std::move(y), {x}, {x2},
      [p, in_shape, want_dx](const Tensor& dy, const std::vector<Tensor>& saved) -> autograd::Grads {
        const Tensor dy2 = as_rows(dy);
        if (p->grad.defined()) {
          Tensor g = p->grad;
          ops::matmul_(dy2, saved[0], g, true, false, 1.0f, p->grad_unset ? 0.0f : 1.0f);
          p->grad_unset = false;
        }
        if (!want_dx) return {Tensor()};
        return {ops::matmul(dy2, p->value).reshape(in_shape)};
      },
      /*force_grad=*/weight.needs_grad());
}

namespace {

constexpr int64_t kFp8Multiple = 16;

/// linear_fp8's output again from what its node keeps (`saved`): x's codes are the transposed codes transposed
/// back (or x quantised again: the same scale, hence the same codes), multiplied as in the forward.
OutputRemake fp8_remake(const std::vector<Tensor>& saved, bool keep_fp8, Parameter* p, Fp8Weights* cache,
                        const Shape& out_shape) {
  return {saved, [keep_fp8, p, cache, out_shape](const std::vector<Tensor>& in) {
            ops::Fp8PerTensor xq;
            if (keep_fp8) {
              xq.codes = ops::contiguous(in[0].transpose(0, 1));
              xq.scale = in[1];
              xq.scale_inv = in[2];
            } else {
              xq = ops::quantize_per_tensor(in[0], DType::E4M3);
            }
            return ops::matmul_fp8(xq, cache->get(*p), DType::BF16, /*fast_accum=*/true).reshape(out_shape);
          }};
}

}  // namespace

autograd::Var linear_fp8(autograd::Tape& tape, const autograd::Var& x, Parameter& weight, Fp8Weights& weights,
                         bool save_fp8_input, Tensor x_row_maxima, GradRowMaximaSlot dy_maxima,
                         OutputRemake* remake) {
  const NvtxRange range("linear_fp8");
  // The weight's FP8 copy first: its shape is the weight's, whether it was quantised here or gathered.
  const ops::Fp8PerTensor& wq = weights.get(weight);
  check_operands("linear_fp8", x, weight, wq.codes.shape());
  const Tensor x2 = as_rows(x.value);
  const int64_t rows = x2.size(0), in = wq.codes.size(1), out = wq.codes.size(0);
  COAT_ARG_CHECK(rows % kFp8Multiple == 0 && in % kFp8Multiple == 0 && out % kFp8Multiple == 0, "linear_fp8",
                 "weight '", weight.name, "' [", out, ", ", in, "] with ", rows,
                 " input rows: FP8 GEMMs need all three to be multiples of ", kFp8Multiple,
                 " (keep this layer in BF16: precision.bf16_layers, or change the batch / sequence length)");
  const bool grad = tape.grad_enabled();
  const bool keep_fp8 = save_fp8_input && grad;
  // fprop: E4M3 x E4M3 with fast accumulation; under COAT the transposed codes for wgrad come from the same pass.
  // With the producer's row maxima the scale is a reduction of those: no amax pass over x.
  ops::Fp8PerTensor xq =
      x_row_maxima.defined()
          ? ops::quantize_per_tensor_from_row_maxima(x2, std::move(x_row_maxima), DType::E4M3, keep_fp8)
          : ops::quantize_per_tensor(x2, DType::E4M3, /*with_transpose=*/keep_fp8);
  const Shape in_shape = x.shape();
  Tensor y = ops::matmul_fp8(xq, wq, DType::BF16, /*fast_accum=*/true).reshape(with_last(in_shape, out));
  std::vector<Tensor> saved;
  if (keep_fp8) {
    saved = {xq.codes_t, xq.scale, xq.scale_inv};
  } else {
    saved = {x2};
  }
  Parameter* p = &weight;
  Fp8Weights* cache = &weights;
  if (remake != nullptr && grad) *remake = fp8_remake(saved, keep_fp8, p, cache, y.shape());
  const bool want_dx = x.requires_grad();
  return tape.record(
      "linear_fp8", std::move(y), {x}, std::move(saved),
      [p, cache, in_shape, want_dx, keep_fp8, dy_maxima](const Tensor& dy,
                                                         const std::vector<Tensor>& saved) -> autograd::Grads {
        const Tensor dy2 = as_rows(dy);
        // E5M2 for gradients; the transpose (wgrad's operand) from the same pass; the scale from the row
        // maxima that dy's producer wrote, where it left them.
        Tensor maxima = dy_maxima ? dy_maxima->take(dy) : Tensor();
        const bool with_t = p->grad.defined();
        const ops::Fp8PerTensor dyq =
            maxima.defined() ? ops::quantize_per_tensor_from_row_maxima(dy2, std::move(maxima), DType::E5M2, with_t)
                             : ops::quantize_per_tensor(dy2, DType::E5M2, with_t);
        if (p->grad.defined()) {
          ops::Fp8PerTensor xt;
          if (keep_fp8) {
            xt.codes = saved[0];
            xt.scale = saved[1];
            xt.scale_inv = saved[2];
          } else {
            xt = ops::quantize_per_tensor(saved[0], DType::E4M3, /*with_transpose=*/true).transposed();
          }
          Tensor g = p->grad;
          ops::matmul_fp8(dyq.transposed(), xt, g, /*accumulate=*/!p->grad_unset, /*fast_accum=*/false);  // [out, in]
          p->grad_unset = false;
        }
        if (!want_dx) return {Tensor()};
        return {ops::matmul_fp8(dyq, cache->transposed(*p), DType::BF16, /*fast_accum=*/false).reshape(in_shape)};
      },
      /*force_grad=*/weight.needs_grad());
}

}  // namespace coat::nn
