#include "coat/train/bench_report.h"

#include <cxxabi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "coat/core/error.h"
#include "coat/models/memory_plan.h"
#include "coat/train/trainer.h"

namespace coat::train {

double StepTimings::total_s() const {
  double t = 0.0;
  for (double s : step_s) t += s;
  return t;
}

double StepTimings::median_s() const {
  if (step_s.empty()) return 0.0;
  std::vector<double> sorted = step_s;
  std::sort(sorted.begin(), sorted.end());
  return sorted[sorted.size() / 2];
}

StepTimings time_train_steps(Trainer& trainer, const ContextPtr& context, int64_t warmup, int64_t steps) {
  COAT_ARG_CHECK(context != nullptr && steps >= 1 && warmup >= 0, "time_train_steps",
                 "needs a context, steps >= 1 and warmup >= 0");
  for (int64_t s = 0; s < warmup; ++s) trainer.train_step();
  PhaseTimer timer(context);
  // The timer is set for the timed steps only, and unset however they end.
  struct Unset {
    Trainer& t;
    ~Unset() { t.set_phase_timer(nullptr); }
  } unset{trainer};
  trainer.set_phase_timer(&timer);
  StepTimings out;
  out.device_timed = timer.device_timed();
  for (int64_t s = 0; s < steps; ++s) {
    context->synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    trainer.train_step();
    context->synchronize();
    out.step_s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    timer.collect();  // outside the timed window
  }
  out.phases = timer.totals();
  return out;
}

double KernelTable::total_ms() const {
  double t = 0.0;
  for (const KernelTime& k : kernels) t += k.total_ms;
  return t;
}

std::vector<KernelTime> KernelTable::top(size_t count) const {
  std::vector<KernelTime> sorted = kernels;
  std::sort(sorted.begin(), sorted.end(), [](const KernelTime& a, const KernelTime& b) {
    return a.total_ms != b.total_ms ? a.total_ms > b.total_ms : a.name < b.name;
  });
  if (sorted.size() > count) sorted.resize(count);
  return sorted;
}

double BenchReport::tokens_per_s() const {
  const double median = timings.median_s();
  return median > 0.0 ? static_cast<double>(tokens_per_step) / median : 0.0;
}

double BenchReport::model_tflops() const {
  return tokens_per_s() * flops_per_token / 1e12;
}

namespace {

std::string demangle(std::string_view name) {
  if (!name.starts_with("_Z")) return std::string(name);
  int status = 0;
  std::unique_ptr<char, decltype(&std::free)> d(
      abi::__cxa_demangle(std::string(name).c_str(), nullptr, nullptr, &status), &std::free);
  return status == 0 && d ? std::string(d.get()) : std::string(name);
}

// "void ns::(anonymous namespace)::k<float, 4>(float const*, int)" -> "ns::k<...>"
std::string strip_signature(std::string s) {
  for (size_t at; (at = s.find("(anonymous namespace)::")) != std::string::npos;) s.erase(at, 23);
  // Template arguments, however deep, become "<...>".
  std::string t;
  int depth = 0;
  for (char c : s) {
    if (c == '<') {
      if (depth++ == 0) t += "<...>";
    } else if (c == '>' && depth > 0) {
      --depth;
    } else if (depth == 0) {
      t += c;
    }
  }
  // The parameter list: from the '(' that matches the final ')'.
  if (!t.empty() && t.back() == ')') {
    int parens = 0;
    for (size_t i = t.size(); i-- > 0;) {
      if (t[i] == ')') ++parens;
      if (t[i] == '(' && --parens == 0) {
        t.erase(i);
        break;
      }
    }
  }
  // The return type.
  const size_t space = t.rfind(' ');
  if (space != std::string::npos) t.erase(0, space + 1);
  return t.empty() ? s : t;
}

std::string percent(double part, double whole) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f%%", whole > 0.0 ? 100.0 * part / whole : 0.0);
  return buf;
}

}  // namespace

std::string kernel_display_name(std::string_view name, size_t max_chars) {
  std::string s = name.starts_with("_Z") ? strip_signature(demangle(name)) : std::string(name);
  if (max_chars >= 4 && s.size() > max_chars) s = s.substr(0, max_chars - 3) + "...";
  return s;
}

nlohmann::json bench_json(const BenchReport& r, size_t top_kernels) {
  nlohmann::json out;
  out["config"] = r.config_path;
  out["device"] = r.device;
  out["recipe"] = r.recipe;
  out["parameters"] = r.parameters;
  out["tokens_per_step"] = r.tokens_per_step;
  out["step_time_median_s"] = r.timings.median_s();
  out["step_times_s"] = r.timings.step_s;
  out["tokens_per_s"] = r.tokens_per_s();
  out["model_tflops"] = r.model_tflops();
  out["final_loss"] = r.final_loss;
  const PhaseTotals& p = r.timings.phases;
  out["phases"] = {{"timer", r.timings.device_timed ? "cuda_events" : "wall_clock"},
                   {"steps", r.timings.step_s.size()},
                   {"step_total_s", r.timings.total_s()},
                   {"forward_s", p[Phase::Forward]},
                   {"backward_s", p[Phase::Backward]},
                   {"optimizer_s", p[Phase::Optimizer]},
                   {"other_s", r.timings.total_s() - p.sum_s()}};
  nlohmann::json peaks;
  for (size_t c = 0; c < kNumMemoryCategories; ++c) {
    const auto cat = static_cast<MemoryCategory>(c);
    peaks[std::string(memory_category_name(cat))] = r.memory.peak(cat);
  }
  out["peak_bytes_by_category"] = peaks;
  out["peak_bytes_total"] = r.memory.total_peak_bytes;
  out["peak_reserved_bytes"] = r.memory.peak_reserved_bytes;
  if (r.kernels) {
    const KernelTable& k = *r.kernels;
    const double total = k.total_ms();
    nlohmann::json top = nlohmann::json::array();
    for (const KernelTime& t : k.top(top_kernels)) {
      top.push_back({{"name", kernel_display_name(t.name)},
                     {"calls", t.calls},
                     {"total_ms", t.total_ms},
                     {"share", total > 0.0 ? t.total_ms / total : 0.0}});
    }
    out["kernels"] = {{"steps", k.steps},
                      {"steps_wall_s", k.steps_wall_s},
                      {"total_ms", total},
                      {"distinct", k.kernels.size()},
                      {"dropped_records", k.dropped_records},
                      {"top", top}};
  }
  if (!r.kernels_note.empty()) out["kernels_note"] = r.kernels_note;
  return out;
}

std::string format_bench_report(const BenchReport& r, size_t top_kernels) {
  std::string out;
  char line[512];
  auto add = [&](const char* fmt, auto... args) {
    std::snprintf(line, sizeof(line), fmt, args...);
    out += line;
  };
  const double median = r.timings.median_s();
  add("%s on %s (%s): %.0f tokens/s, %.1f model TFLOP/s, step %.1f ms (median of %zu), loss %.4f\n",
      r.config_path.c_str(), r.device.c_str(), r.recipe.c_str(), r.tokens_per_s(), r.model_tflops(),
      median * 1e3, r.timings.step_s.size(), r.final_loss);
  const PhaseTotals& p = r.timings.phases;
  const double total = r.timings.total_s();
  add("step split over %zu steps (%s), %.1f ms in all:", r.timings.step_s.size(),
      r.timings.device_timed ? "CUDA events" : "wall clock", total * 1e3);
  for (Phase ph : {Phase::Forward, Phase::Backward, Phase::Optimizer}) {
    add(" %s %.1f ms (%s),", phase_name(ph), p[ph] * 1e3, percent(p[ph], total).c_str());
  }
  add(" other %.1f ms (%s)\n", (total - p.sum_s()) * 1e3, percent(total - p.sum_s(), total).c_str());
  add("peak memory: %s allocated, %s reserved\n",
      models::format_bytes(static_cast<double>(r.memory.total_peak_bytes)).c_str(),
      models::format_bytes(static_cast<double>(r.memory.peak_reserved_bytes)).c_str());
  for (size_t c = 0; c < kNumMemoryCategories; ++c) {
    const auto cat = static_cast<MemoryCategory>(c);
    if (r.memory.peak(cat) == 0) continue;
    add("  %-16s %12s\n", std::string(memory_category_name(cat)).c_str(),
        models::format_bytes(static_cast<double>(r.memory.peak(cat))).c_str());
  }
  if (r.kernels) {
    const KernelTable& k = *r.kernels;
    const double kernel_ms = k.total_ms();
    const std::vector<KernelTime> top = k.top(top_kernels);
    add("top %zu of %zu kernels over %lld profiled steps: kernel time %.1f ms, %s of the steps' %.1f ms\n",
        top.size(), k.kernels.size(), static_cast<long long>(k.steps), kernel_ms,
        percent(kernel_ms, k.steps_wall_s * 1e3).c_str(), k.steps_wall_s * 1e3);
    add("  %6s %10s %7s  %s\n", "share", "total ms", "calls", "kernel");
    for (const KernelTime& t : top) {
      add("  %6s %10.2f %7lld  %s\n", percent(t.total_ms, kernel_ms).c_str(), t.total_ms,
          static_cast<long long>(t.calls), kernel_display_name(t.name).c_str());
    }
    if (k.dropped_records > 0) {
      add("  (the profiler dropped %lld activity records: the table undercounts)\n",
          static_cast<long long>(k.dropped_records));
    }
  }
  if (!r.kernels_note.empty()) out += "kernel table: " + r.kernels_note + "\n";
  return out;
}

}  // namespace coat::train
