// Quantization-error study of FP8 optimizer-state storages.
#include "coat/optim/state_study.h"

#include <cmath>
#include <cstdio>
#include <sstream>

#include "coat/ops/copy.h"

namespace coat::optim {

std::vector<StudyFormat> table1_formats(int64_t group_size) {
  using ops::MomentEncoding;
  return {{"E4M3", {MomentEncoding::FP8, DType::E4M3, group_size}},
          {"E4M3+Expand", {MomentEncoding::FP8Expand, DType::E4M3, group_size}},
          {"E5M2", {MomentEncoding::FP8, DType::E5M2, group_size}},
          {"E5M2+Expand", {MomentEncoding::FP8Expand, DType::E5M2, group_size}}};
}

namespace {

std::vector<double> round_trip(const Tensor& x, const ops::MomentSpec& spec) {
  ops::QuantizedMoment q = ops::make_moment(x.context(), x.numel(), spec, MemoryCategory::Other);
  ops::quantize_moment(x, q);
  return ops::to_double_vector(ops::dequantize_moment(q));
}

}  // namespace

StudyTable quantization_study(const std::vector<std::pair<Tensor, Tensor>>& moments,
                              const std::vector<StudyFormat>& formats, double eps) {
  COAT_ARG_CHECK(std::isfinite(eps) && eps >= 0.0, "quantization_study", "eps ", eps, " must be finite and >= 0");
  const size_t nf = formats.size();
  StudyTable t;
  for (const StudyFormat& f : formats) t.labels.push_back(f.label);
  t.mse.assign(nf, std::vector<double>(nf, 0.0));
  t.mse_m.assign(nf, 0.0);
  t.mse_v.assign(nf, 0.0);
  double sum_r2 = 0.0;
  for (const auto& [m_in, v_in] : moments) {
    COAT_ARG_CHECK(m_in.dtype() == DType::F32 && v_in.dtype() == DType::F32 && m_in.numel() == v_in.numel(),
                   "quantization_study", "moments must be F32 pairs of one size, got ", m_in.str(), " and ",
                   v_in.str());
    const Tensor m = ops::contiguous(m_in).flatten(), v = ops::contiguous(v_in).flatten();
    const std::vector<double> m0 = ops::to_double_vector(m), v0 = ops::to_double_vector(v);
    const size_t n = m0.size();
    std::vector<double> r0(n);
    for (size_t i = 0; i < n; ++i) {
      r0[i] = m0[i] / (std::sqrt(v0[i]) + eps);
      sum_r2 += r0[i] * r0[i];
    }
    std::vector<std::vector<double>> mq(nf), vq(nf);
    for (size_t f = 0; f < nf; ++f) {
      mq[f] = round_trip(m, formats[f].spec);
      vq[f] = round_trip(v, formats[f].spec);
      for (size_t i = 0; i < n; ++i) {
        t.mse_m[f] += (mq[f][i] - m0[i]) * (mq[f][i] - m0[i]);
        t.mse_v[f] += (vq[f][i] - v0[i]) * (vq[f][i] - v0[i]);
      }
    }
    for (size_t a = 0; a < nf; ++a) {
      for (size_t b = 0; b < nf; ++b) {
        double s = 0.0;
        for (size_t i = 0; i < n; ++i) {
          const double r = mq[a][i] / (std::sqrt(vq[b][i]) + eps) - r0[i];
          s += r * r;
        }
        t.mse[a][b] += s;
      }
    }
    t.elements += static_cast<int64_t>(n);
  }
  if (t.elements > 0) {
    const double n = static_cast<double>(t.elements);
    for (size_t a = 0; a < nf; ++a) {
      t.mse_m[a] /= n;
      t.mse_v[a] /= n;
      for (size_t b = 0; b < nf; ++b) t.mse[a][b] /= n;
    }
    t.mean_square_update = sum_r2 / n;
  }
  return t;
}

std::string format_study(const StudyTable& t) {
  std::ostringstream out;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%-14s", "m \\ v");
  out << buf;
  for (const std::string& l : t.labels) {
    std::snprintf(buf, sizeof buf, " %14s", l.c_str());
    out << buf;
  }
  out << "\n";
  for (size_t a = 0; a < t.labels.size(); ++a) {
    std::snprintf(buf, sizeof buf, "%-14s", t.labels[a].c_str());
    out << buf;
    for (size_t b = 0; b < t.labels.size(); ++b) {
      std::snprintf(buf, sizeof buf, " %14.6g", t.mse[a][b]);
      out << buf;
    }
    out << "\n";
  }
  return out.str();
}

}  // namespace coat::optim
