// AdamW over flat buffers with FP32, BF16, FP8 or range-expanded FP8 moments.
#include "coat/optim/adamw.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/elementwise.h"
#include "coat/ops/optimizer.h"
#include "coat/ops/quantized_moment.h"

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
  ops::validate(c.exp_avg);
  ops::validate(c.exp_avg_sq);
}

void check_buffer(const OptimBuffer& b) {
  COAT_ARG_CHECK(!b.name.empty(), "AdamW", "a buffer has an empty name");
  COAT_ARG_CHECK(b.param.defined() && b.grad.defined(), "AdamW", "buffer '", b.name,
                 "' has an undefined param or grad");
  COAT_ARG_CHECK(b.param.dtype() == DType::F32 && b.grad.dtype() == DType::F32, "AdamW", "buffer '", b.name,
                 "': param ", dtype_name(b.param.dtype()), " and grad ", dtype_name(b.grad.dtype()),
                 "; expected f32 for both");
  COAT_ARG_CHECK(b.param.dim() == 1 && b.param.shape() == b.grad.shape(), "AdamW", "buffer '", b.name, "': param ",
                 shape_str(b.param.shape()), " and grad ", shape_str(b.grad.shape()),
                 "; expected two 1-D tensors of one length");
  COAT_ARG_CHECK(b.param.is_contiguous() && b.grad.is_contiguous(), "AdamW", "buffer '", b.name,
                 "': param and grad must be contiguous");
  COAT_ARG_CHECK(b.param.device() == b.grad.device(), "AdamW", "buffer '", b.name, "': param on ",
                 b.param.device().str(), ", grad on ", b.grad.device().str());
  int64_t last = 0;
  for (const ops::DecayRange& r : b.decay) {
    COAT_ARG_CHECK(r.begin >= last && r.begin < r.end && r.end <= b.param.numel(), "AdamW", "buffer '", b.name,
                   "': decay range [", r.begin, ", ", r.end, ") is empty, unsorted, overlapping or outside [0, ",
                   b.param.numel(), ")");
    last = r.end;
  }
}

std::vector<OptimBuffer> buffers_of(const std::vector<OptimSegment>& segments) {
  std::vector<OptimBuffer> out;
  out.reserve(segments.size());
  for (const OptimSegment& s : segments) {
    COAT_ARG_CHECK(s.param.defined() && s.grad.defined(), "AdamW", "segment '", s.name,
                   "' has an undefined param or grad");
    COAT_ARG_CHECK(s.param.is_contiguous() && s.grad.is_contiguous(), "AdamW", "segment '", s.name,
                   "': param and grad must be contiguous");
    COAT_ARG_CHECK(s.param.shape() == s.grad.shape(), "AdamW", "segment '", s.name, "': param ",
                   shape_str(s.param.shape()), " and grad ", shape_str(s.grad.shape()), " differ in shape");
    OptimBuffer b{s.name, s.param.flatten(), s.grad.flatten(), {}, {}};
    if (s.decay && s.param.numel() > 0) b.decay.push_back({0, s.param.numel()});
    out.push_back(std::move(b));
  }
  return out;
}

}  // namespace

std::vector<ops::DecayRange> merge_decay_ranges(std::vector<ParamSpan> spans) {
  std::sort(spans.begin(), spans.end(), [](const ParamSpan& a, const ParamSpan& b) { return a.begin < b.begin; });
  std::vector<ops::DecayRange> ranges;
  bool previous_decayed = false;
  for (const ParamSpan& s : spans) {
    if (s.end <= s.begin) continue;
    // Consecutive decayed parameters form one range: only zero padding lies between them, and zero
    // parameters with zero gradients stay zero under any AdamW update with eps > 0 (eps = 0 makes them
    // 0/0, as it does zero-gradient weights in PyTorch; nothing reads the padding).
    if (s.decay && previous_decayed) {
      ranges.back().end = s.end;
    } else if (s.decay) {
      ranges.push_back({s.begin, s.end});
    }
    previous_decayed = s.decay;
  }
  return ranges;
}

std::vector<ops::DecayRange> slice_decay_ranges(const std::vector<ops::DecayRange>& ranges, int64_t begin,
                                                int64_t length) {
  std::vector<ops::DecayRange> out;
  for (const ops::DecayRange& r : ranges) {
    const int64_t lo = std::max(r.begin, begin), hi = std::min(r.end, begin + length);
    if (lo < hi) out.push_back({lo - begin, hi - begin});
  }
  return out;
}

std::vector<OptimBuffer> make_buffers(const std::vector<UnitView>& units) {
  std::vector<OptimBuffer> out;
  for (const UnitView& u : units) {
    COAT_ARG_CHECK(u.master.defined() && u.master.dim() == 1, "AdamW", "unit '", u.name,
                   "': master must be a defined 1-D buffer");
    std::vector<ParamSpan> spans;
    for (const auto& [view, decay] : u.params) {
      COAT_ARG_CHECK(view.shares_storage_with(u.master) && view.is_contiguous(), "AdamW", "unit '", u.name,
                     "': a parameter is not a contiguous view of the unit's master buffer");
      const int64_t begin = view.offset() - u.master.offset();
      COAT_ARG_CHECK(begin >= 0 && begin + view.numel() <= u.master.numel(), "AdamW", "unit '", u.name,
                     "': a parameter view lies outside the unit");
      spans.push_back({begin, begin + view.numel(), decay});
    }
    out.push_back(OptimBuffer{u.name, u.master, u.grad, merge_decay_ranges(std::move(spans)), u.compute});
  }
  return out;
}

AdamW::AdamW(const std::vector<OptimSegment>& segments, AdamWConfig config)
    : AdamW(buffers_of(segments), config) {}

AdamW::AdamW(std::vector<OptimBuffer> buffers, AdamWConfig config)
    : buffers_(std::move(buffers)), config_(config) {
  check_config(config_);
  std::set<std::string> names;
  for (const OptimBuffer& b : buffers_) {
    check_buffer(b);
    COAT_ARG_CHECK(names.insert(b.name).second, "AdamW", "buffer name '", b.name, "' is used twice");
  }
  states_.reserve(buffers_.size());
  for (const OptimBuffer& b : buffers_) {
    const ContextPtr& ctx = b.param.context();
    states_.push_back(State{ops::make_moment(ctx, b.param.numel(), config_.exp_avg, MemoryCategory::OptimizerState),
                            ops::make_moment(ctx, b.param.numel(), config_.exp_avg_sq, MemoryCategory::OptimizerState)});
  }
}

// Squares of float gradients summed in double cannot overflow (FLT_MAX^2 < DBL_MAX), so the norm is
// non-finite exactly when some gradient element is inf or NaN. The per-buffer sums are added on the
// buffers' device in buffer order (double); one read-back per step.
double AdamW::grad_norm() const {
  Tensor total;
  for (const OptimBuffer& b : buffers_) {
    if (b.grad.numel() == 0) continue;
    Tensor sq = ops::sum_squares(b.grad);
    if (!total.defined()) {
      total = sq;
    } else {
      ops::add_(total, sq);
    }
  }
  if (reduce_sums_) {
    if (!total.defined() && !buffers_.empty()) total = ops::zeros(buffers_.front().grad.context(), {1}, DType::F64);
    if (total.defined()) reduce_sums_(total);
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
  for (size_t i = 0; i < buffers_.size(); ++i) update(i, lr, step, grad_scale);
  step_count_ = step;
  return stats;
}

void AdamW::update(size_t i, float lr, int64_t step, float grad_scale, const Tensor* skip) {
  OptimBuffer& b = buffers_[i];
  if (b.param.numel() == 0) return;
  ops::AdamWHyper h;
  h.lr = lr;
  h.beta1 = config_.beta1;
  h.beta2 = config_.beta2;
  h.eps = config_.eps;
  h.weight_decay = config_.weight_decay;
  h.step = step;
  h.grad_scale = grad_scale;
  ops::adamw_step_quantized(b.param, b.grad, states_[i].exp_avg, states_[i].exp_avg_sq, h, b.decay,
                            b.compute.defined() ? &b.compute : nullptr, skip,
                            b.maxima.defined() ? &b.maxima : nullptr);
}

void AdamW::begin_step(float lr) {
  COAT_ARG_CHECK(std::isfinite(lr) && lr >= 0.0f, "AdamW", "lr ", lr, " must be finite and >= 0");
  COAT_ARG_CHECK(config_.clip_grad_norm == 0.0f, "AdamW",
                 "a step buffer by buffer cannot clip by the global gradient norm (known only after the last "
                 "buffer); clip_grad_norm is ", config_.clip_grad_norm, ", expected 0");
  COAT_ARG_CHECK(!pending_.open, "AdamW", "begin_step: the previous per-buffer step was not ended");
  pending_.open = true;
  pending_.lr = lr;
  pending_.order.clear();
  if (buffers_.empty()) return;
  if (!pending_.sums.defined()) {
    // Small and kept from step to step (not optimizer state proper: no checkpoint holds it).
    const ContextPtr& ctx = buffers_[0].param.context();
    const int64_t slots = static_cast<int64_t>(buffers_.size()) + 1;
    pending_.sums = Tensor::empty(ctx, {slots}, DType::F64, MemoryCategory::Other);
    pending_.skip = Tensor::empty(ctx, {1}, DType::I32, MemoryCategory::Other);
  }
  ops::fill_(pending_.sums, 0.0);
  ops::fill_(pending_.skip, 0.0);
}

void AdamW::skip_if_nonfinite(const Tensor& loss_sum) {
  COAT_ARG_CHECK(pending_.open, "AdamW", "skip_if_nonfinite outside begin_step / end_step");
  if (buffers_.empty()) return;
  ops::flag_nonfinite(pending_.skip, loss_sum);
}

void AdamW::update_buffer(size_t i) {
  COAT_ARG_CHECK(pending_.open, "AdamW", "update_buffer(", i, ") outside begin_step / end_step");
  COAT_ARG_CHECK(i < buffers_.size(), "AdamW", "update_buffer: buffer ", i, " of ", buffers_.size());
  const OptimBuffer& b = buffers_[i];
  COAT_ARG_CHECK(b.param.device() == pending_.skip.device(), "AdamW", "update_buffer: buffer '", b.name, "' is on ",
                 b.param.device().str(), " but the step's state on ", pending_.skip.device().str(),
                 " (a per-buffer step keeps every buffer on one device)");
  pending_.order.push_back(i);
  if (b.grad.numel() == 0 && !reduce_sums_) return;  // its slot stays 0
  // Queued on the device, read by nobody until end_step: the sum into its slot (over every rank's slice when
  // sharded: the same sum, flag and decision everywhere), the flag raised when it is not finite, then the
  // update, which the flag (this buffer's or an earlier one's) turns into nothing.
  Tensor sum = b.grad.numel() == 0 ? ops::zeros(b.grad.context(), {1}, DType::F64) : ops::sum_squares(b.grad);
  if (reduce_sums_) reduce_sums_(sum);
  Tensor slot = pending_.sums.slice(0, static_cast<int64_t>(i), static_cast<int64_t>(i) + 1);
  ops::copy_(slot, sum);
  ops::flag_nonfinite(pending_.skip, sum);
  update(i, pending_.lr, step_count_ + 1, 1.0f, &pending_.skip);
}

StepStats AdamW::end_step() {
  COAT_ARG_CHECK(pending_.open, "AdamW", "end_step without begin_step");
  pending_.open = false;
  StepStats stats;
  if (buffers_.empty()) {
    ++step_count_;
    return stats;
  }
  const size_t n = buffers_.size();
  Tensor flag_slot = pending_.sums.slice(0, static_cast<int64_t>(n), static_cast<int64_t>(n) + 1);
  ops::copy_(flag_slot, pending_.skip);
  const std::vector<double> read = ops::to_double_vector(pending_.sums);  // the step's one read-back
  stats.skipped = read[n] != 0.0;
  std::vector<bool> updated(n, false);
  for (size_t i : pending_.order) {
    updated[i] = true;
    if (!stats.first_nonfinite_buffer && !std::isfinite(read[i])) stats.first_nonfinite_buffer = i;
  }
  double total = 0.0;
  for (size_t i = 0; i < n; ++i) {
    COAT_ARG_CHECK(updated[i] || stats.skipped, "AdamW", "end_step: buffer '", buffers_[i].name,
                   "' was not updated in this step");
    total += updated[i] ? read[i] : std::numeric_limits<double>::quiet_NaN();
  }
  stats.grad_norm = std::sqrt(total);
  if (!stats.skipped) ++step_count_;
  return stats;
}

std::vector<std::pair<std::string, Tensor>> AdamW::state_tensors() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < buffers_.size(); ++i) {
    for (auto& [suffix, t] : states_[i].exp_avg.tensors()) out.emplace_back(buffers_[i].name + ".exp_avg" + suffix, t);
    for (auto& [suffix, t] : states_[i].exp_avg_sq.tensors()) {
      out.emplace_back(buffers_[i].name + ".exp_avg_sq" + suffix, t);
    }
  }
  return out;
}

Tensor AdamW::exp_avg_f32(size_t i) const { return ops::dequantize_moment(states_.at(i).exp_avg); }
Tensor AdamW::exp_avg_sq_f32(size_t i) const { return ops::dequantize_moment(states_.at(i).exp_avg_sq); }

size_t AdamW::state_bytes() const {
  size_t total = 0;
  for (const State& s : states_) total += s.exp_avg.bytes() + s.exp_avg_sq.bytes();
  return total;
}

void AdamW::set_step_count(int64_t steps) {
  COAT_ARG_CHECK(steps >= 0, "AdamW", "step count ", steps, " must be >= 0");
  step_count_ = steps;
}

}  // namespace coat::optim
