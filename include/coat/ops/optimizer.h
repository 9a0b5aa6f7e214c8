// Device-agnostic optimizer kernels: the FP32 AdamW update of one flat buffer, the sum of squares behind
// global gradient norms and the device-side flag that stops a step's updates when something is not finite.
#pragma once

#include <cstdint>

#include "coat/core/tensor.h"

namespace coat::ops {

/// The hyperparameters of one AdamW update.
struct AdamWHyper {
  float lr = 0.0f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  int64_t step = 1;          ///< 1-based, for bias correction
  float grad_scale = 1.0f;   ///< gradients are multiplied by this first (clipping / averaging)
};

/// One AdamW step in place (torch.optim.AdamW semantics, decoupled weight decay):
///   g = grad * grad_scale;  p *= 1 - lr * wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
///   p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
/// computed in float in the fixed operation order documented in coat/backend/cpu/optimizer.h (identical
/// bits on every backend). param, grad, m, v: F32, contiguous, same element count and device.
/// Non-finite gradients are not checked here (they propagate); callers skip such steps.
void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWHyper& h);

/// sum of x_i^2 accumulated in double: a one-element F64 tensor on x's device. x: any float dtype
/// (f32, f64, bf16, f16, e4m3, e5m2), any strides. NaN and inf propagate.
Tensor sum_squares(const Tensor& x);

/// flag (I32 [1], contiguous) <- 1 when some element of x (f32 or f64, x's device = flag's) is inf or NaN;
/// left as it is otherwise (never cleared). On the device, without a host synchronisation: the skip flag
/// of a step whose updates are queued before anyone reads the gradient norm (optim::AdamW::update_buffer).
void flag_nonfinite(Tensor& flag, const Tensor& x);

}  // namespace coat::ops
