// The memory a training run will take on each device, by category, predicted from the configuration
// before anything is allocated (coat-train --dry-run prints it).
#pragma once

#include <string>
#include <vector>

#include "coat/core/dtype.h"
#include "coat/core/memory_stats.h"
#include "coat/models/model_config.h"

namespace coat::models {

struct MemoryPlanInput {
  int64_t micro_batch_size = 1;
  int64_t seq_len = 1;
  DType param_dtype = DType::F32;       ///< master weights
  DType compute_dtype = DType::F32;     ///< compute copy of the weights (== param dtype: no copy)
  DType activation_dtype = DType::F32;
  DType grad_dtype = DType::F32;
  double optimizer_bytes_per_param = 8.0;  ///< AdamW FP32: two moments
};

struct MemoryPlanLine {
  MemoryCategory category;
  size_t bytes;
  std::string what;  ///< how it was counted
};

struct MemoryPlan {
  std::vector<MemoryPlanLine> lines;
  size_t total() const;
  /// A table with one line per category and the total.
  std::string str() const;
};

MemoryPlan plan_memory(const ModelConfig& model, const MemoryPlanInput& in);

/// "1.23 GiB", "456.7 MiB", "12 B".
std::string format_bytes(double bytes);

}  // namespace coat::models
