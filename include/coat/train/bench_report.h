// coat-bench's measurements and their report: training steps timed one by one with the step split into
// forward, backward and optimizer (PhaseTimer), the kernel table of extra profiled steps (CUDA, filled
// by the tool from the CUPTI kernel profiler), peak memory; as text and as JSON.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "coat/core/context.h"
#include "coat/core/memory_stats.h"
#include "coat/train/phase_timer.h"

namespace coat::train {

class Trainer;

struct StepTimings {
  std::vector<double> step_s;  ///< wall time of each timed step (the device synchronised before and after)
  PhaseTotals phases;          ///< forward, backward, optimizer, summed over the timed steps
  bool device_timed = false;   ///< phases timed by CUDA events (GPU time) rather than the wall clock

  double total_s() const;   ///< sum of step_s
  double median_s() const;  ///< 0 when there are no steps
};

/// Runs `warmup` steps untimed, then `steps` steps timed one by one with a PhaseTimer on `context` (the
/// trainer's) set on the trainer for the timed steps only.
StepTimings time_train_steps(Trainer& trainer, const ContextPtr& context, int64_t warmup, int64_t steps);

/// One kernel of the kernel table: its name as the profiler reports it (mangled for C++ kernels).
struct KernelTime {
  std::string name;
  int64_t calls = 0;
  double total_ms = 0.0;
};

struct KernelTable {
  int64_t steps = 0;          ///< profiled steps
  double steps_wall_s = 0.0;  ///< their wall time
  std::vector<KernelTime> kernels;
  int64_t dropped_records = 0;  ///< activity records the profiler lost (buffers full)

  double total_ms() const;  ///< kernel time of all kernels
  /// The `top` kernels by total time, longest first (ties by name).
  std::vector<KernelTime> top(size_t count) const;
};

struct BenchReport {
  std::string config_path;
  std::string device;
  std::string recipe;
  int64_t parameters = 0;
  int64_t tokens_per_step = 0;
  double flops_per_token = 0.0;  ///< training FLOPs per token (6N + attention)
  StepTimings timings;           ///< the timed steps (no profiler attached)
  double final_loss = 0.0;
  MemoryReport memory;
  std::optional<KernelTable> kernels;  ///< CUDA with the kernel profiler
  std::string kernels_note;            ///< why a kernel table that was asked for is missing

  double tokens_per_s() const;  ///< from the median step
  double model_tflops() const;
};

/// A kernel name short enough for a table line: demangled, without return type, parameters, template
/// arguments ("<...>") and anonymous namespaces, cut to `max_chars` with "...". Names that are not
/// mangled C++ (cuBLAS's, cuDNN's) are only cut.
std::string kernel_display_name(std::string_view name, size_t max_chars = 90);

/// The report as JSON: the headline numbers, "phases" (seconds per phase over the timed steps, the
/// rest as "other_s") and, when measured, "kernels" (the top `top_kernels` with name, calls, total_ms
/// and share of all kernel time).
nlohmann::json bench_json(const BenchReport& report, size_t top_kernels = 15);
/// The same as text for the terminal (lines end with '\n').
std::string format_bench_report(const BenchReport& report, size_t top_kernels = 15);

}  // namespace coat::train
