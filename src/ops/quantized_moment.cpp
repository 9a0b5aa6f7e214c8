// Compressed optimizer moments: validation here, kernels in the backends.
#include "coat/ops/quantized_moment.h"

#include "coat/ops/copy.h"

#include <cmath>
#include <string_view>

#include "coat/backend/cpu/quantized_adamw.h"
#include "coat/ops/creation.h"
#include "coat/ops/dispatch.h"
#include "coat/ops/reduce.h"
#ifdef COAT_WITH_CUDA
#include "coat/backend/cuda/quantized_adamw.h"
#endif

namespace coat::ops {
namespace {

constexpr int64_t kMaxGroupSize = 65536;

using moment_codec::Codec;

bool is_grouped(MomentEncoding e) {
  return e == MomentEncoding::FP8 || e == MomentEncoding::FP8Expand;
}

std::string_view encoding_name(MomentEncoding e) {
  switch (e) {
    case MomentEncoding::F32:
      return "f32";
    case MomentEncoding::BF16:
      return "bf16";
    case MomentEncoding::FP8:
      return "fp8";
    case MomentEncoding::FP8Expand:
      return "fp8-expand";
  }
  return "?";
}

Codec codec_of(const MomentSpec& s) {
  const bool e5 = s.fp8 == DType::E5M2;
  switch (s.encoding) {
    case MomentEncoding::F32:
      return Codec::F32;
    case MomentEncoding::BF16:
      return Codec::BF16;
    case MomentEncoding::FP8:
      return e5 ? Codec::Fp8E5M2 : Codec::Fp8E4M3;
    case MomentEncoding::FP8Expand:
      return e5 ? Codec::ExpandE5M2 : Codec::ExpandE4M3;
  }
  return Codec::F32;
}

int64_t group_count(int64_t numel, const MomentSpec& spec) {
  return is_grouped(spec.encoding) ? (numel + spec.group_size - 1) / spec.group_size : 0;
}

void check_f32_vector(const Tensor& t, const char* op, const char* name, int64_t numel, Device device) {
  COAT_ARG_CHECK(t.defined(), op, name, " is undefined");
  COAT_ARG_CHECK(t.dtype() == DType::F32, op, name, " has dtype ", dtype_name(t.dtype()), "; expected f32");
  COAT_ARG_CHECK(t.is_contiguous(), op, name, " ", t.str(), " must be contiguous");
  COAT_ARG_CHECK(t.numel() == numel, op, name, " has ", t.numel(), " elements ", shape_str(t.shape()),
                 "; expected ", numel);
  COAT_ARG_CHECK(t.device() == device, op, name, " is on ", t.device().str(), "; expected ", device.str());
}

/// adamw_step_quantized's maxima (and step_maxima's out): F32 [ceil(numel / granule)], contiguous, on device.
void check_maxima(const Tensor& maxima, int64_t numel, Device device, const char* op) {
  const int64_t granules = step_maxima_count(numel);
  COAT_ARG_CHECK(maxima.defined() && maxima.dtype() == DType::F32 && maxima.numel() == granules &&
                     maxima.is_contiguous() && maxima.device() == device,
                 op, "maxima must be a contiguous f32 tensor of ", granules, " elements (one per ",
                 kStepMaximaGranule, " of ", numel, ") on ", device.str(), ", got ",
                 maxima.defined() ? maxima.str() : std::string("undefined"));
}

/// The moment's spec, codes and metadata are consistent; role names it in messages ("m", "v", "moment").
void check_moment(const QuantizedMoment& m, const char* op, const char* role) {
  try {
    validate(m.spec);
  } catch (const InvalidArgument& e) {
    COAT_ARG_CHECK(false, op, role, ": ", e.what());
  }
  COAT_ARG_CHECK(m.numel >= 0, op, role, " numel ", m.numel, " must be >= 0");
  COAT_ARG_CHECK(m.codes.defined(), op, role, " codes are undefined (make the moment with make_moment)");
  const DType want = moment_codec::code_dtype(codec_of(m.spec));
  COAT_ARG_CHECK(m.codes.dtype() == want, op, role, " codes have dtype ", dtype_name(m.codes.dtype()),
                 " but ", moment_spec_str(m.spec), " stores ", dtype_name(want));
  COAT_ARG_CHECK(m.codes.is_contiguous(), op, role, " codes ", m.codes.str(), " must be contiguous");
  COAT_ARG_CHECK(m.codes.numel() == m.numel, op, role, " codes have ", m.codes.numel(),
                 " elements but numel is ", m.numel);
  const Device device = m.codes.device();
  const int64_t groups = m.groups();
  if (is_grouped(m.spec.encoding)) {
    const std::string what = std::string(role) + " scale";
    check_f32_vector(m.scale, op, what.c_str(), groups, device);
  }
  if (m.spec.encoding == MomentEncoding::FP8Expand) {
    const std::string expo = std::string(role) + " expo", center = std::string(role) + " center";
    check_f32_vector(m.expo, op, expo.c_str(), groups, device);
    check_f32_vector(m.center, op, center.c_str(), groups, device);
  }
}

moment_codec::MomentBuffers buffers_of(const QuantizedMoment& m) {
  moment_codec::MomentBuffers b;
  b.codec = codec_of(m.spec);
  b.group_size = m.spec.group_size;
  b.codes = m.codes;
  if (is_grouped(m.spec.encoding)) b.scale = m.scale;
  if (m.spec.encoding == MomentEncoding::FP8Expand) {
    b.expo = m.expo;
    b.center = m.center;
  }
  return b;
}

void check_hyper(const AdamWHyper& h) {
  constexpr const char* op = "adamw_step_quantized";
  COAT_ARG_CHECK(std::isfinite(h.lr) && h.lr >= 0.0f, op, "lr ", h.lr, " must be finite and >= 0");
  COAT_ARG_CHECK(h.beta1 >= 0.0f && h.beta1 < 1.0f, op, "beta1 ", h.beta1, " must be in [0, 1)");
  COAT_ARG_CHECK(h.beta2 >= 0.0f && h.beta2 < 1.0f, op, "beta2 ", h.beta2, " must be in [0, 1)");
  COAT_ARG_CHECK(std::isfinite(h.eps) && h.eps >= 0.0f, op, "eps ", h.eps, " must be finite and >= 0");
  COAT_ARG_CHECK(std::isfinite(h.weight_decay) && h.weight_decay >= 0.0f, op, "weight_decay ", h.weight_decay,
                 " must be finite and >= 0");
  COAT_ARG_CHECK(h.step >= 1, op, "step ", h.step, " must be >= 1 (1-based, for bias correction)");
  COAT_ARG_CHECK(std::isfinite(h.grad_scale), op, "grad_scale ", h.grad_scale, " must be finite");
}

/// Validates the ranges and merges them into the kernels' plan (empty ranges dropped, touching ones joined,
/// one range covering everything -> all).
moment_codec::DecayPlan decay_plan(const std::vector<DecayRange>& ranges, int64_t numel, float weight_decay) {
  constexpr const char* op = "adamw_step_quantized";
  moment_codec::DecayPlan plan;
  int64_t previous_end = 0;
  for (size_t i = 0; i < ranges.size(); ++i) {
    const DecayRange& r = ranges[i];
    COAT_ARG_CHECK(r.begin >= 0 && r.begin <= r.end && r.end <= numel, op, "decay range ", i, " [", r.begin,
                   ", ", r.end, ") is not within [0, ", numel, ") or has end < begin");
    COAT_ARG_CHECK(r.begin >= previous_end, op, "decay range ", i, " [", r.begin, ", ", r.end,
                   ") overlaps or precedes the range before it (ending at ", previous_end,
                   "); ranges must be sorted and non-overlapping");
    previous_end = r.end;
    if (r.begin == r.end) continue;
    if (!plan.end.empty() && plan.end.back() == r.begin) {
      plan.end.back() = r.end;
    } else {
      plan.begin.push_back(r.begin);
      plan.end.push_back(r.end);
    }
  }
  // Without weight decay both sets of scalars are equal: skip the lookups.
  if (weight_decay == 0.0f || (plan.begin.size() == 1 && plan.begin[0] == 0 && plan.end[0] == numel)) {
    plan.all = true;
    plan.begin.clear();
    plan.end.clear();
  }
  return plan;
}

}  // namespace

void validate(const MomentSpec& spec) {
  const int e = static_cast<int>(spec.encoding);
  COAT_ARG_CHECK(e >= 0 && e <= static_cast<int>(MomentEncoding::FP8Expand), "MomentSpec", "encoding ", e,
                 " is not one of F32, BF16, FP8, FP8Expand");
  COAT_ARG_CHECK(is_fp8(spec.fp8), "MomentSpec", "fp8 is ", dtype_name(spec.fp8),
                 "; expected an FP8 format (e4m3 or e5m2)");
  COAT_ARG_CHECK(spec.group_size >= 1 && spec.group_size <= kMaxGroupSize, "MomentSpec", "group_size ",
                 spec.group_size, " is out of range [1, ", kMaxGroupSize, "]");
}

std::string moment_spec_str(const MomentSpec& spec) {
  std::string s(encoding_name(spec.encoding));
  if (is_grouped(spec.encoding)) {
    s += '(';
    s += dtype_name(spec.fp8);
    s += ", group ";
    s += std::to_string(spec.group_size);
    s += ')';
  }
  return s;
}

int64_t QuantizedMoment::groups() const {
  return group_count(numel, spec);
}

size_t QuantizedMoment::bytes() const {
  size_t total = 0;
  for (const auto& [suffix, t] : tensors()) total += t.nbytes();
  return total;
}

std::vector<std::pair<std::string, Tensor>> QuantizedMoment::tensors() const {
  std::vector<std::pair<std::string, Tensor>> out;
  if (codes.defined()) out.emplace_back("", codes);
  // The expansion stores log2 s and log2 g (moment_codec.h): its own names, so that a checkpoint written
  // when s and g were stored directly is refused by name instead of being misread.
  const bool expand = spec.encoding == MomentEncoding::FP8Expand;
  if (scale.defined()) out.emplace_back(expand ? ".log2_scale" : ".scale", scale);
  if (expo.defined()) out.emplace_back(".expo", expo);
  if (center.defined()) out.emplace_back(".log2_center", center);
  return out;
}

MomentLayout moment_layout(const MomentSpec& spec, int64_t numel) {
  validate(spec);
  MomentLayout l;
  l.code_dtype = moment_codec::code_dtype(codec_of(spec));
  if (!is_grouped(spec.encoding)) return l;
  l.groups = group_count(numel, spec);
  l.parts = spec.encoding == MomentEncoding::FP8Expand ? 3 : 1;
  l.stride = (l.groups + 3) / 4 * 4;
  return l;
}

QuantizedMoment make_moment(const ContextPtr& ctx, int64_t numel, const MomentSpec& spec,
                            MemoryCategory category) {
  COAT_ARG_CHECK(ctx != nullptr, "make_moment", "context is null");
  COAT_ARG_CHECK(numel >= 0, "make_moment", "numel ", numel, " must be >= 0");
  QuantizedMoment m;
  m.spec = spec;
  m.numel = numel;
  const MomentLayout layout = moment_layout(spec, numel);  // validates spec
  m.codes = zeros(ctx, {numel}, layout.code_dtype, category);
  if (layout.parts == 0) return m;
  // The group metadata in one allocation (scale, then expo and centre with expansion), each part starting on
  // a 16-byte boundary: one allocation rounds up once (the caching allocator's 2 MiB granularity would
  // otherwise be paid three times per moment).
  const int64_t groups = layout.groups, stride = layout.stride;
  Tensor meta = zeros(ctx, {layout.parts * stride}, DType::F32, category);
  m.scale = meta.slice(0, 0, groups);
  if (layout.parts == 3) {
    m.expo = meta.slice(0, stride, stride + groups);
    fill_(m.expo, 1.0);
    m.center = meta.slice(0, 2 * stride, 2 * stride + groups);
  }
  return m;
}

void quantize_moment(const Tensor& values, QuantizedMoment& out) {
  constexpr const char* op = "quantize_moment";
  check_moment(out, op, "moment");
  check_f32_vector(values, op, "values", out.numel, out.codes.device());
  if (out.numel == 0) return;
  moment_codec::MomentBuffers b = buffers_of(out);
  COAT_DISPATCH(op, values.device(), cpu::quantize_moment(values, b), cuda::quantize_moment(values, b));
}

Tensor dequantize_moment(const QuantizedMoment& m) {
  constexpr const char* op = "dequantize_moment";
  check_moment(m, op, "moment");
  Tensor out = Tensor::empty(m.codes.context(), {m.numel}, DType::F32, MemoryCategory::Workspace);
  if (m.numel == 0) return out;
  const moment_codec::MomentBuffers b = buffers_of(m);
  COAT_DISPATCH(op, out.device(), cpu::dequantize_moment(b, out), cuda::dequantize_moment(b, out));
  return out;
}

void adamw_step_quantized(Tensor& param, const Tensor& grad, QuantizedMoment& m, QuantizedMoment& v,
                          const AdamWHyper& h, const std::vector<DecayRange>& decay_ranges, Tensor* compute_copy,
                          const Tensor* skip, Tensor* maxima) {
  constexpr const char* op = "adamw_step_quantized";
  COAT_ARG_CHECK(param.defined(), op, "param is undefined");
  const int64_t n = param.numel();
  const Device device = param.device();
  check_f32_vector(param, op, "param", n, device);
  check_f32_vector(grad, op, "grad", n, device);
  check_moment(m, op, "exp_avg (m)");
  check_moment(v, op, "exp_avg_sq (v)");
  COAT_ARG_CHECK(m.numel == n, op, "exp_avg (m) has ", m.numel, " elements but param has ", n);
  COAT_ARG_CHECK(v.numel == n, op, "exp_avg_sq (v) has ", v.numel, " elements but param has ", n);
  COAT_ARG_CHECK(m.codes.device() == device, op, "exp_avg (m) is on ", m.codes.device().str(),
                 " but param is on ", device.str());
  COAT_ARG_CHECK(v.codes.device() == device, op, "exp_avg_sq (v) is on ", v.codes.device().str(),
                 " but param is on ", device.str());
  check_hyper(h);
  if (compute_copy != nullptr) {
    COAT_ARG_CHECK(compute_copy->defined() && compute_copy->dtype() == DType::BF16 && compute_copy->numel() == n &&
                       compute_copy->is_contiguous() && compute_copy->device() == device,
                   op, "compute_copy must be a contiguous bf16 tensor of ", n, " elements on ", device.str(), ", got ",
                   compute_copy->defined() ? compute_copy->str() : std::string("undefined"));
  }
  if (skip != nullptr) {
    COAT_ARG_CHECK(skip->defined() && skip->dtype() == DType::I32 && skip->numel() == 1 && skip->is_contiguous() &&
                       skip->device() == device,
                   op, "skip must be a contiguous i32 tensor of one element on ", device.str(), ", got ",
                   skip->defined() ? skip->str() : std::string("undefined"));
  }
  if (maxima != nullptr) check_maxima(*maxima, n, device, op);
  const moment_codec::DecayPlan plan = decay_plan(decay_ranges, n, h.weight_decay);
  if (n == 0) return;
  const adamw_math::AdamWScalars with_decay =
      adamw_math::adamw_scalars(h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, h.step, h.grad_scale);
  const adamw_math::AdamWScalars without_decay =
      adamw_math::adamw_scalars(h.lr, h.beta1, h.beta2, h.eps, 0.0f, h.step, h.grad_scale);
  moment_codec::MomentBuffers mb = buffers_of(m), vb = buffers_of(v);
  // done: the compute copy was written by the pass, or must stay as it is (a skipped step).
  bool done = false;
  // maxima_done: the pass wrote the maxima too.
  bool maxima_done = false;
  COAT_DISPATCH(op, device, done = cpu::adamw_step_quantized(param, grad, mb, vb, with_decay, without_decay, plan, skip),
                done = cuda::adamw_step_quantized(param, grad, mb, vb, with_decay, without_decay, plan,
                                                  compute_copy, skip, maxima, &maxima_done));
  if (compute_copy != nullptr && !done) ops::copy_(*compute_copy, param);
  if (maxima != nullptr && !maxima_done) step_maxima(param, *maxima);
}

void step_maxima(const Tensor& x, Tensor& out) {
  constexpr const char* op = "step_maxima";
  COAT_ARG_CHECK(x.defined(), op, "x is undefined");
  const int64_t n = x.numel();
  check_f32_vector(x, op, "x", n, x.device());
  check_maxima(out, n, x.device(), op);
  const int64_t g = kStepMaximaGranule, whole = n / g;
  if (whole > 0) {
    const Tensor full = group_amax(x.slice(0, 0, whole * g).reshape({whole, g}), g).reshape({whole});
    Tensor head = out.slice(0, 0, whole);
    copy_(head, full);
  }
  if (whole * g < n) {
    Tensor tail = out.slice(0, whole, whole + 1);
    copy_(tail, amax(x.slice(0, whole * g, n)));
  }
}

}  // namespace coat::ops
