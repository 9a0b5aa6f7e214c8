// AdamW over parameter segments.
#include "coat/optim/adamw.h"

#include <cmath>
#include <set>

#include "coat/ops/copy.h"
#include "coat/ops/elementwise.h"
#include "coat/ops/creation.h"
#include "coat/ops/optimizer.h"

namespace coat::optim {
namespace {

void check_config(const AdamWConfig& c) {
  COAT_ARG_CHECK(c.beta1 >= 0.0f && c.beta1 < 1.0f, "AdamW", "beta1 ", c.beta1, " must be in [0, 1)");
  COAT_ARG_CHECK(c.beta2 >= 0.0f && c.beta2 < 1.0f, "AdamW", "beta2 ", c.beta2, " must be in [0, 1)");
  COAT_ARG_CHECK(std::isfinite(c.eps) && c.eps >= 0.0f, "AdamW", "eps ", c.eps, " must be finite and >= 0");
  COAT_ARG_CHECK(std::isfinite(c.weight_decay) && c.weight_decay >= 0.0f, "AdamW", "weight_decay ",
                 c.weight_decay, " must be finite and >= 0");
  COAT_ARG_CHECK(std::isfinite(c.clip_grad_norm) && c.clip_grad_norm >= 0.0f, "AdamW", "clip_grad_norm ",
                 c.clip_grad_norm, " must be finite and >= 0 (0: off)");
}

void check_segment(const OptimSegment& s) {
  COAT_ARG_CHECK(!s.name.empty(), "AdamW", "a segment has an empty name");
  COAT_ARG_CHECK(s.param.defined() && s.grad.defined(), "AdamW", "segment '", s.name,
                 "' has an undefined param or grad");
  COAT_ARG_CHECK(s.param.dtype() == DType::F32 && s.grad.dtype() == DType::F32, "AdamW", "segment '", s.name,
                 "': param ", dtype_name(s.param.dtype()), " and grad ", dtype_name(s.grad.dtype()),
                 "; expected f32 for both");
  COAT_ARG_CHECK(s.param.shape() == s.grad.shape(), "AdamW", "segment '", s.name, "': param ",
                 shape_str(s.param.shape()), " and grad ", shape_str(s.grad.shape()), " differ in shape");
  COAT_ARG_CHECK(s.param.is_contiguous() && s.grad.is_contiguous(), "AdamW", "segment '", s.name,
                 "': param and grad must be contiguous");
  COAT_ARG_CHECK(s.param.device() == s.grad.device(), "AdamW", "segment '", s.name, "': param on ",
                 s.param.device().str(), ", grad on ", s.grad.device().str());
}

}  // namespace

AdamW::AdamW(std::vector<OptimSegment> segments, AdamWConfig config)
    : segments_(std::move(segments)), config_(config) {
  check_config(config_);
  std::set<std::string> names;
  for (const OptimSegment& s : segments_) {
    check_segment(s);
    COAT_ARG_CHECK(names.insert(s.name).second, "AdamW", "segment name '", s.name, "' is used twice");
  }
  states_.reserve(segments_.size());
  for (const OptimSegment& s : segments_) {
    const ContextPtr& ctx = s.param.context();
    states_.push_back(State{ops::zeros(ctx, s.param.shape(), DType::F32, MemoryCategory::OptimizerState),
                            ops::zeros(ctx, s.param.shape(), DType::F32, MemoryCategory::OptimizerState)});
  }
}

// Squares of float gradients summed in double cannot overflow (FLT_MAX^2 < DBL_MAX), so the norm is
// non-finite exactly when some gradient element is inf or NaN. The per-segment sums are added on the
// segments' device in segment order (double); one read-back per step.
double AdamW::grad_norm() const {
  Tensor total;
  for (const OptimSegment& s : segments_) {
    Tensor sq = ops::sum_squares(s.grad);
    if (!total.defined()) {
      total = sq;
    } else {
      ops::add_(total, sq);
    }
  }
  return total.defined() ? std::sqrt(ops::to_double_vector(total)[0]) : 0.0;
}

StepStats AdamW::step(float lr) {
  COAT_ARG_CHECK(std::isfinite(lr) && lr >= 0.0f, "AdamW", "lr ", lr, " must be finite and >= 0");
  StepStats stats;
  stats.grad_norm = grad_norm();
  if (!std::isfinite(stats.grad_norm)) {
    stats.skipped = true;
    return stats;
  }
  float grad_scale = 1.0f;
  if (config_.clip_grad_norm > 0.0f) {
    const double factor = static_cast<double>(config_.clip_grad_norm) / (stats.grad_norm + 1e-6);
    if (factor < 1.0) {
      grad_scale = static_cast<float>(factor);
      stats.clipped = true;
    }
  }
  const int64_t step = step_count_ + 1;
  for (size_t i = 0; i < segments_.size(); ++i) {
    OptimSegment& s = segments_[i];
    ops::AdamWHyper h;
    h.lr = lr;
    h.beta1 = config_.beta1;
    h.beta2 = config_.beta2;
    h.eps = config_.eps;
    h.weight_decay = s.decay ? config_.weight_decay : 0.0f;
    h.step = step;
    h.grad_scale = grad_scale;
    ops::adamw_step(s.param, s.grad, states_[i].exp_avg, states_[i].exp_avg_sq, h);
  }
  step_count_ = step;
  return stats;
}

std::vector<std::pair<std::string, Tensor>> AdamW::state_tensors() const {
  std::vector<std::pair<std::string, Tensor>> out;
  out.reserve(2 * segments_.size());
  for (size_t i = 0; i < segments_.size(); ++i) {
    out.emplace_back(segments_[i].name + ".exp_avg", states_[i].exp_avg);
    out.emplace_back(segments_[i].name + ".exp_avg_sq", states_[i].exp_avg_sq);
  }
  return out;
}

void AdamW::set_step_count(int64_t steps) {
  COAT_ARG_CHECK(steps >= 0, "AdamW", "step count ", steps, " must be >= 0");
  step_count_ = steps;
}

}  // namespace coat::optim
