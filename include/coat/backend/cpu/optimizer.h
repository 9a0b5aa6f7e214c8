// cpu kernels: the FP32 AdamW update and the sum of squares behind global gradient norms. The reference
// for a CUDA twin, which is meant to run the per-element arithmetic below (AdamWScalars, adamw_update)
// literally and so give the same bits.
//
// The fixed operation order of one element (all float, every operation one IEEE operation rounded to
// nearest even, no FMA contraction: host code is built with -ffp-contract=off, device code spells the
// operations with __fmul_rn / __fadd_rn / __fsub_rn / __fdiv_rn / __fsqrt_rn):
//   g = grad * grad_scale
//   p = p * decay                            decay     = 1 - lr * weight_decay
//   m = (beta1 * m) + (one_minus_beta1 * g)
//   v = (beta2 * v) + (one_minus_beta2 * (g * g))
//   d = (sqrt(v) / bias2_sqrt) + eps         bias2_sqrt = sqrt(1 - beta2^step)
//   p = p - (step_size * (m / d))            step_size = lr / (1 - beta1^step)
// The per-step scalars are computed once on the host in double from the float hyperparameters and rounded
// once to float (adamw_scalars), as PyTorch computes them in Python floats; both backends receive the same
// floats. This is torch.optim.AdamW (decoupled weight decay, bias correction, eps added after the bias-
// corrected square root) with the moments updated as b*x + (1-b)*y.
// Callers (coat/ops) validate dtypes, shapes and devices; these functions assume them valid.
#pragma once

#include <cmath>
#include <cstdint>

#include "coat/core/float_ops.h"
#include "coat/core/host_device.h"
#include "coat/core/tensor.h"

namespace coat::adamw_math {

/// The per-step constants of one AdamW update, as floats.
struct AdamWScalars {
  float grad_scale = 1.0f;
  float decay = 1.0f;  ///< 1 - lr * weight_decay
  float beta1 = 0.9f;
  float one_minus_beta1 = 0.1f;
  float beta2 = 0.999f;
  float one_minus_beta2 = 0.001f;
  float bias2_sqrt = 1.0f;  ///< sqrt(1 - beta2^step)
  float step_size = 0.0f;   ///< lr / (1 - beta1^step)
  float eps = 1e-8f;
  float folded_step = 0.0f;  ///< step_size * bias2_sqrt (adamw_update_folded)
  float folded_eps = 1e-8f;  ///< eps * bias2_sqrt (adamw_update_folded)
};

/// The constants for step `step` (1-based), each computed in double and rounded once to float.
inline AdamWScalars adamw_scalars(float lr, float beta1, float beta2, float eps, float weight_decay, int64_t step,
                                  float grad_scale) {
  const double b1 = beta1, b2 = beta2, t = static_cast<double>(step);
  AdamWScalars s;
  s.grad_scale = grad_scale;
  s.decay = static_cast<float>(1.0 - static_cast<double>(lr) * static_cast<double>(weight_decay));
  s.beta1 = beta1;
  s.one_minus_beta1 = static_cast<float>(1.0 - b1);
  s.beta2 = beta2;
  s.one_minus_beta2 = static_cast<float>(1.0 - b2);
  s.bias2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(b2, t)));
  s.step_size = static_cast<float>(static_cast<double>(lr) / (1.0 - std::pow(b1, t)));
  s.eps = eps;
  const double bias2_sqrt = std::sqrt(1.0 - std::pow(b2, t));
  s.folded_step = static_cast<float>(static_cast<double>(lr) / (1.0 - std::pow(b1, t)) * bias2_sqrt);
  s.folded_eps = static_cast<float>(static_cast<double>(eps) * bias2_sqrt);
  return s;
}

/// One element of the update, in the order documented at the top of this file.
COAT_HOST_DEVICE inline void adamw_update(float& p, float grad, float& m, float& v, const AdamWScalars& s) {
  const float g = mul_rn(grad, s.grad_scale);
  const float decayed = mul_rn(p, s.decay);
  const float m_new = add_rn(mul_rn(s.beta1, m), mul_rn(s.one_minus_beta1, g));
  const float v_new = add_rn(mul_rn(s.beta2, v), mul_rn(s.one_minus_beta2, mul_rn(g, g)));
  const float denom = add_rn(div_rn(sqrt_rn(v_new), s.bias2_sqrt), s.eps);
  p = sub_rn(decayed, mul_rn(s.step_size, div_rn(m_new, denom)));
  m = m_new;
  v = v_new;
}

/// The same update with the bias correction folded into two constants and the division as a reciprocal:
///   r = 1 / (sqrt(v) + folded_eps)
///   p = p * decay - folded_step * (m * r)
/// (algebraically torch's step: (m / bc1) / (sqrt(v) / b2 + eps) = (b2 / bc1) m / (sqrt(v) + eps b2)). Used
/// where the moments are FP8 codes (quantized_adamw), whose decoded values carry far more error than the
/// extra rounding; each operation is still one IEEE operation, so both backends give the same bits. F32 and
/// BF16 moments keep adamw_update, bit for bit torch's order (moment_codec::uses_folded_update).
COAT_HOST_DEVICE inline void adamw_update_folded(float& p, float grad, float& m, float& v, const AdamWScalars& s) {
  const float g = mul_rn(grad, s.grad_scale);
  const float decayed = mul_rn(p, s.decay);
  m = add_rn(mul_rn(s.beta1, m), mul_rn(s.one_minus_beta1, g));
  v = add_rn(mul_rn(s.beta2, v), mul_rn(s.one_minus_beta2, mul_rn(g, g)));
  const float r = rcp_rn(add_rn(sqrt_rn(v), s.folded_eps));
  p = sub_rn(decayed, mul_rn(s.folded_step, mul_rn(m, r)));
}

/// adamw_update_folded when kFolded (moment_codec::uses_folded_update), else adamw_update.
template <bool kFolded>
COAT_HOST_DEVICE inline void adamw_update_for(float& p, float grad, float& m, float& v, const AdamWScalars& s) {
  if constexpr (kFolded) {
    adamw_update_folded(p, grad, m, v, s);
  } else {
    adamw_update(p, grad, m, v, s);
  }
}

}  // namespace coat::adamw_math

namespace coat::cpu {

/// param, m, v updated in place by adamw_math::adamw_update; all four tensors contiguous F32 with one
/// element count.
void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const adamw_math::AdamWScalars& s);
/// sum of x_i^2 over a contiguous float tensor (any float dtype, read exactly as double), accumulated in
/// double in index order, into the one-element F64 tensor out (0 for an empty tensor).
void sum_squares(const Tensor& x, Tensor& out);
/// flag[0] = 1 when some element of the contiguous f32/f64 x is inf or NaN; untouched otherwise.
void flag_nonfinite(Tensor& flag, const Tensor& x);

}  // namespace coat::cpu
