// Memory counters by category and their report table.
#include "coat/core/memory_stats.h"

#include <algorithm>
#include <cstdio>

namespace coat {

std::string_view memory_category_name(MemoryCategory c) {
  switch (c) {
    case MemoryCategory::Weights: return "weights";
    case MemoryCategory::MasterWeights: return "master_weights";
    case MemoryCategory::Gradients: return "gradients";
    case MemoryCategory::OptimizerState: return "optimizer_state";
    case MemoryCategory::Activations: return "activations";
    case MemoryCategory::Workspace: return "workspace";
    case MemoryCategory::Communication: return "communication";
    case MemoryCategory::CheckpointSnapshot: return "ckpt_snapshot";
    case MemoryCategory::Other: return "other";
  }
  return "?";
}

std::string MemoryReport::to_string() const {
  constexpr double kMiB = 1024.0 * 1024.0;
  std::string out;
  char line[128];
  std::snprintf(line, sizeof(line), "%-16s %12s %12s\n", "category", "current MiB", "peak MiB");
  out += line;
  for (size_t i = 0; i < kNumMemoryCategories; ++i) {
    std::snprintf(line, sizeof(line), "%-16s %12.1f %12.1f\n",
                  std::string(memory_category_name(static_cast<MemoryCategory>(i))).c_str(),
                  current_bytes[i] / kMiB, peak_bytes[i] / kMiB);
    out += line;
  }
  std::snprintf(line, sizeof(line), "%-16s %12.1f %12.1f\n", "total", total_current_bytes / kMiB,
                total_peak_bytes / kMiB);
  out += line;
  std::snprintf(line, sizeof(line), "%-16s %12.1f %12.1f\n", "reserved", reserved_bytes / kMiB,
                peak_reserved_bytes / kMiB);
  out += line;
  return out;
}

void MemoryStats::on_allocate(MemoryCategory c, size_t bytes) {
  std::lock_guard lock(mutex_);
  size_t i = static_cast<size_t>(c);
  r_.current_bytes[i] += bytes;
  r_.peak_bytes[i] = std::max(r_.peak_bytes[i], r_.current_bytes[i]);
  r_.total_current_bytes += bytes;
  r_.total_peak_bytes = std::max(r_.total_peak_bytes, r_.total_current_bytes);
}

void MemoryStats::on_free(MemoryCategory c, size_t bytes) {
  std::lock_guard lock(mutex_);
  r_.current_bytes[static_cast<size_t>(c)] -= bytes;
  r_.total_current_bytes -= bytes;
}

void MemoryStats::on_reserve(size_t bytes) {
  std::lock_guard lock(mutex_);
  r_.reserved_bytes += bytes;
  r_.peak_reserved_bytes = std::max(r_.peak_reserved_bytes, r_.reserved_bytes);
  ++r_.system_allocations;
}

void MemoryStats::on_release(size_t bytes) {
  std::lock_guard lock(mutex_);
  r_.reserved_bytes -= bytes;
  ++r_.system_frees;
}

void MemoryStats::reset_peaks() {
  std::lock_guard lock(mutex_);
  r_.peak_bytes = r_.current_bytes;
  r_.total_peak_bytes = r_.total_current_bytes;
  r_.peak_reserved_bytes = r_.reserved_bytes;
}

MemoryReport MemoryStats::report() const {
  std::lock_guard lock(mutex_);
  return r_;
}

}  // namespace coat
