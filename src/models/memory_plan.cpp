#include "coat/models/memory_plan.h"

#include <cstdio>

namespace coat::models {

size_t MemoryPlan::total() const {
  size_t t = 0;
  for (const auto& l : lines) t += l.bytes;
  return t;
}

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 4) {
    bytes /= 1024.0;
    ++u;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", bytes, units[u]);
  return buf;
}

std::string MemoryPlan::str() const {
  std::string out;
  char buf[256];
  for (const auto& l : lines) {
    std::snprintf(buf, sizeof buf, "  %-16s %12s  %s\n", std::string(memory_category_name(l.category)).c_str(),
                  format_bytes(static_cast<double>(l.bytes)).c_str(), l.what.c_str());
    out += buf;
  }
  std::snprintf(buf, sizeof buf, "  %-16s %12s\n", "total", format_bytes(static_cast<double>(total())).c_str());
  return out + buf;
}

MemoryPlan plan_memory(const ModelConfig& m, const MemoryPlanInput& in) {
  MemoryPlan plan;
  const double n = static_cast<double>(m.parameter_count());
  const auto bytes = [](double count, DType t) { return static_cast<size_t>(count * static_cast<double>(dtype_size(t))); };
  const bool separate_compute = in.compute_dtype != in.param_dtype;
  plan.lines.push_back({MemoryCategory::Weights, bytes(n, separate_compute ? in.compute_dtype : in.param_dtype),
                        std::to_string(m.parameter_count()) + " parameters in " +
                            std::string(dtype_name(separate_compute ? in.compute_dtype : in.param_dtype))});
  if (separate_compute) {
    plan.lines.push_back({MemoryCategory::MasterWeights, bytes(n, in.param_dtype),
                          "master copy in " + std::string(dtype_name(in.param_dtype))});
  }
  plan.lines.push_back({MemoryCategory::Gradients, bytes(n, in.grad_dtype),
                        "accumulated in " + std::string(dtype_name(in.grad_dtype))});
  plan.lines.push_back({MemoryCategory::OptimizerState, static_cast<size_t>(n * in.optimizer_bytes_per_param),
                        "AdamW moments"});
  // Saved activations per token and layer (what the functions keep for backward): the block input and
  // the two norm outputs (h each), q and the attention output (h each), k and v (kv each), the residual
  // after attention (h), gate, up and their product (ffn each); plus the final norm's input and output and
  // the logits' gradient kept by the fused cross-entropy.
  const double tokens = static_cast<double>(in.micro_batch_size * in.seq_len);
  const double h = static_cast<double>(m.hidden_size);
  const double kv = static_cast<double>(m.num_key_value_heads * m.head_dim());
  const double ffn = static_cast<double>(m.intermediate_size);
  const double per_layer = 6 * h + 2 * kv + 3 * ffn;
  const double act = tokens * (per_layer * static_cast<double>(m.num_hidden_layers) + 2 * h);
  const double logits = tokens * static_cast<double>(m.vocab_size);
  plan.lines.push_back({MemoryCategory::Activations, bytes(act + 2 * logits, in.activation_dtype),
                        "saved for backward: " + std::to_string(static_cast<int64_t>(per_layer)) +
                            " values/token/layer; logits and their gradient"});
  return plan;
}

}  // namespace coat::models
