#include "coat/models/memory_plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "coat/models/unit_layout.h"

namespace coat::models {

namespace {

// The CUDA context's cuBLASLt workspace, held for the context's lifetime (cuda::CudaContext::
// kCublasLtWorkspaceBytes; tests/train/test_memory_plan.cpp checks that the two agree).
constexpr size_t kCublasLtWorkspaceBytes = size_t{32} << 20;

// Bytes that one allocation of `bytes` takes from the device's allocator: the CPU allocator rounds to
// 256 bytes (allocator.h); the CUDA caching allocator to 512 bytes up to 1 MiB and to 2 MiB above
// (caching_allocator.h).
size_t allocation_bytes(double bytes, const Device& device) {
  const auto b = static_cast<size_t>(bytes);
  if (b == 0) return 0;
  const auto up = [b](size_t multiple) { return (b + multiple - 1) / multiple * multiple; };
  if (device.is_cuda()) return b <= (size_t{1} << 20) ? up(512) : up(size_t{2} << 20);
  return up(256);
}

/// The allocations of one AdamW moment of n elements, as ops::make_moment makes them (ops::moment_layout).
size_t moment_allocation(const ops::MomentSpec& spec, int64_t n, const Device& device) {
  const ops::MomentLayout l = ops::moment_layout(spec, n);
  return allocation_bytes(static_cast<double>(l.code_bytes(n)), device) +
         (l.parts > 0 ? allocation_bytes(static_cast<double>(l.metadata_bytes()), device) : 0);
}

// The shapes that size the activations of one micro-batch.
struct ActivationShapes {
  double tokens = 0;  // B * T
  double hidden = 0, kv = 0, ffn = 0, vocab = 0, heads = 0;
  double value_bytes = 0;  // the compute dtype: every activation and activation gradient
  double stat_bytes = 0;   // per-row norm statistics and attention log-sum-exp (F32; F64 for F64 compute)
  int stats_per_norm = 0;  // rms_norm keeps rstd; layer_norm keeps mean and rstd
};

// Counts tensors either as the tape counts them (exact bytes) or as the allocator hands them out.
struct Counter {
  const ActivationShapes& s;
  Device device;
  bool rounded;
  size_t operator()(double elements, double element_bytes) const {
    const double bytes = elements * element_bytes;
    return rounded ? allocation_bytes(bytes, device) : static_cast<size_t>(bytes);
  }
  size_t values(double per_token) const { return (*this)(s.tokens * per_token, s.value_bytes); }
  size_t stats(double per_token) const { return (*this)(s.tokens * per_token, s.stat_bytes); }
  size_t norm_stats() const { return static_cast<size_t>(s.stats_per_norm) * stats(1); }
};

// What one block keeps for its backward, following each function's save policy (nn/*.h); storages shared
// by several functions count once. The input norm saves x (the block's input) and its statistics; the
// q/k/v projection saves the norm's output; the attention saves q and k after RoPE, v, its output (which the
// o projection saves too) and the log-sum-exp: as separate tensors or as one packed qkv projection rotated in
// place (nn::packed_attention), the same bytes; the post-attention norm saves the residual and statistics;
// the gate/up projection saves the norm's output; SwiGLU saves gate and up (or the packed gate_up); the
// down projection saves their product.
size_t block_saved(const Counter& c) {
  const ActivationShapes& s = c.s;
  return c.values(s.hidden) + c.norm_stats()        // input norm: x and its statistics
         + c.values(s.hidden)                       // q/k/v projection: the norm's output
         + c.values(s.hidden) + 2 * c.values(s.kv)  // attention: q and k after RoPE, v
         + c.values(s.hidden) + c.stats(s.heads)    // attention: output, log-sum-exp [B, H, T]
         + c.values(s.hidden) + c.norm_stats()      // post-attention norm: residual and statistics
         + c.values(s.hidden)                       // gate/up projection: the norm's output
         + 3 * c.values(s.ffn);                     // swiglu: gate and up; down projection: their product
}

// The final norm (its input and statistics), the LM head (the final norm's output) and the fused
// cross-entropy (the logits' gradient, made in the forward).
size_t head_saved(const Counter& c) {
  return c.values(c.s.hidden) + c.norm_stats() + c.values(c.s.hidden) + c.values(c.s.vocab);
}

// Gradients alive beyond the block's saved tensors at the widest point of a block's backward: at the
// SwiGLU backward, the gradient of the block's output (held for the residual branch), the gradient of the
// product and the gradients of gate and up, while the product itself was just freed; at the attention
// backward, the residual gradient, the output's gradient and dq, dk, dv, while the MLP's tensors, the
// residual and the post-attention norm's statistics are gone.
int64_t block_backward_extra(const Counter& c) {
  const ActivationShapes& s = c.s;
  const auto at_swiglu = static_cast<int64_t>(c.values(s.hidden) + 2 * c.values(s.ffn));
  const auto at_attention =
      static_cast<int64_t>(3 * c.values(s.hidden) + 2 * c.values(s.kv)) -
      static_cast<int64_t>(2 * c.values(s.hidden) + c.norm_stats() + 3 * c.values(s.ffn));
  return std::max(at_swiglu, at_attention);
}

std::string per_token(double v) {
  return std::to_string(static_cast<int64_t>(v));
}

}  // namespace

size_t MemoryPlan::total() const {
  size_t t = 0;
  for (const auto& l : lines) t += l.bytes;
  return t;
}

size_t MemoryPlan::bytes(MemoryCategory category) const {
  size_t t = 0;
  for (const auto& l : lines) {
    if (l.category == category) t += l.bytes;
  }
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
  char buf[512];
  for (size_t k = 0; k < kNumMemoryCategories; ++k) {
    const auto category = static_cast<MemoryCategory>(k);
    std::vector<const MemoryPlanLine*> parts;
    for (const auto& l : lines) {
      if (l.category == category) parts.push_back(&l);
    }
    if (parts.empty()) continue;
    const std::string name(memory_category_name(category));
    if (parts.size() == 1) {
      std::snprintf(buf, sizeof buf, "  %-16s %12s  %s\n", name.c_str(),
                    format_bytes(static_cast<double>(parts[0]->bytes)).c_str(), parts[0]->what.c_str());
      out += buf;
      continue;
    }
    std::snprintf(buf, sizeof buf, "  %-16s %12s%s\n", name.c_str(),
                  format_bytes(static_cast<double>(bytes(category))).c_str(),
                  category == MemoryCategory::Activations && !activation_peak.empty()
                      ? ("  peak " + activation_peak).c_str()
                      : "");
    out += buf;
    for (const MemoryPlanLine* p : parts) {
      std::snprintf(buf, sizeof buf, "  %-16s %12s    %s\n", "",
                    format_bytes(static_cast<double>(p->bytes)).c_str(), p->what.c_str());
      out += buf;
    }
  }
  std::snprintf(buf, sizeof buf, "  %-16s %12s\n", "total",
                format_bytes(static_cast<double>(total())).c_str());
  return out + buf;
}

MemoryPlan plan_memory(const ModelConfig& m, const MemoryPlanInput& in) {
  m.validate();
  COAT_ARG_CHECK(in.micro_batch_size > 0 && in.seq_len > 0, "plan_memory", "micro-batch ",
                 in.micro_batch_size, " and sequence length ", in.seq_len, " must be positive");
  MemoryPlan plan;
  const Device dev = in.device;
  const bool mixed = in.compute_dtype != in.param_dtype;
  const double param_bytes = static_cast<double>(dtype_size(in.param_dtype));
  const double compute_bytes = static_cast<double>(dtype_size(in.compute_dtype));

  // Parameters, gradients and AdamW states: one flat buffer per unit and role.
  const std::vector<UnitLayout> units = unit_layouts(m);
  int64_t padded = 0;
  size_t weights = 0, masters = 0, grads = 0, states = 0;
  for (const UnitLayout& u : units) {
    const auto n = static_cast<double>(u.numel);
    padded += u.numel;
    weights += allocation_bytes(n * (mixed ? compute_bytes : param_bytes), dev);
    masters += mixed ? allocation_bytes(n * param_bytes, dev) : 0;
    grads += allocation_bytes(n * param_bytes, dev);
    states += moment_allocation(in.exp_avg, u.numel, dev) + moment_allocation(in.exp_avg_sq, u.numel, dev);
  }
  std::string count = std::to_string(m.parameter_count()) + " parameters";
  if (padded != m.parameter_count()) count += " (" + std::to_string(padded) + " with alignment padding)";
  count += " in " + std::to_string(units.size()) + " units";
  plan.lines.push_back({MemoryCategory::Weights, weights,
                        count + " in " + std::string(dtype_name(mixed ? in.compute_dtype : in.param_dtype))});
  if (mixed) {
    plan.lines.push_back({MemoryCategory::MasterWeights, masters,
                          "master copy in " + std::string(dtype_name(in.param_dtype))});
  }
  plan.lines.push_back(
      {MemoryCategory::Gradients, grads, "accumulated in " + std::string(dtype_name(in.param_dtype))});
  char state_what[160];
  std::snprintf(state_what, sizeof state_what, "AdamW moments m %s, v %s: %.4g bytes per parameter",
                ops::moment_spec_str(in.exp_avg).c_str(), ops::moment_spec_str(in.exp_avg_sq).c_str(),
                static_cast<double>(states) / static_cast<double>(std::max<int64_t>(padded, 1)));
  plan.lines.push_back({MemoryCategory::OptimizerState, states, state_what});

  // Activations.
  ActivationShapes s;
  s.tokens = static_cast<double>(in.micro_batch_size * in.seq_len);
  s.hidden = static_cast<double>(m.hidden_size);
  s.kv = static_cast<double>(m.num_key_value_heads * m.head_dim());
  s.ffn = static_cast<double>(m.intermediate_size);
  s.vocab = static_cast<double>(m.vocab_size);
  s.heads = static_cast<double>(m.num_attention_heads);
  s.value_bytes = compute_bytes;
  s.stat_bytes = in.compute_dtype == DType::F64 ? 8.0 : 4.0;
  s.stats_per_norm = m.norms_have_weights() ? 1 : 2;
  const Counter exact{s, dev, false};
  const Counter alloc{s, dev, true};
  const bool recompute = in.recompute == Recompute::Blocks;
  const auto layers = static_cast<size_t>(m.num_hidden_layers);

  // What the tape holds at the end of the forward: per block everything (or, recomputing, the block's
  // input alone), the head's tensors and the token ids (the embedding saves them; a view of the batch).
  plan.saved_bytes = layers * (recompute ? exact.values(s.hidden) : block_saved(exact)) + head_saved(exact) +
                     exact(s.tokens, 4);

  const size_t inputs = 2 * alloc(s.tokens, 4);  // ids and targets, I32
  const size_t block = block_saved(alloc);
  const size_t kept_blocks = layers * (recompute ? alloc.values(s.hidden) : block);
  const size_t head = head_saved(alloc);
  const size_t logits = alloc.values(s.vocab);
  const int64_t extra = block_backward_extra(alloc);
  const size_t forward_end = inputs + kept_blocks + head + logits;
  const size_t head_backward = inputs + kept_blocks + head + alloc.values(s.hidden);
  const size_t last_block_backward =
      static_cast<size_t>(static_cast<int64_t>(inputs + (recompute ? (layers - 1) * alloc.values(s.hidden) +
                                                                         block + alloc.values(s.hidden)
                                                                   : kept_blocks)) +
                          extra);
  const std::string block_what = "per block " + format_bytes(static_cast<double>(block)) + ": " +
                                 per_token(6 * s.hidden + 2 * s.kv + 3 * s.ffn) + " values/token + " +
                                 std::to_string(2 * s.stats_per_norm) +
                                 " norm statistics/token + log-sum-exp [B, " + per_token(s.heads) + ", T]";
  const auto act = [&plan](size_t bytes, std::string what) {
    plan.lines.push_back({MemoryCategory::Activations, bytes, std::move(what)});
  };
  act(inputs, "token ids and targets (i32)");
  if (forward_end >= head_backward && forward_end >= last_block_backward) {
    plan.activation_peak = "at the end of the forward";
    act(kept_blocks, recompute ? "block inputs kept by " + std::to_string(layers) + " recomputed blocks"
                               : "saved by " + std::to_string(layers) + " blocks (" + block_what + ")");
    act(head, "saved by the final norm, LM head and cross-entropy (the logits' gradient [B*T, V])");
    act(logits, "logits [B*T, V] (freed when the loss is computed)");
  } else if (head_backward >= last_block_backward) {
    plan.activation_peak = "in the LM head's backward";
    act(kept_blocks, recompute ? "block inputs kept by " + std::to_string(layers) + " recomputed blocks"
                               : "saved by " + std::to_string(layers) + " blocks (" + block_what + ")");
    act(head, "saved by the final norm, LM head and cross-entropy (the logits' gradient [B*T, V])");
    act(alloc.values(s.hidden), "gradient of the hidden states");
  } else {
    plan.activation_peak = "in the last block's backward";
    if (recompute) {
      act((layers - 1) * alloc.values(s.hidden),
          "block inputs kept by " + std::to_string(layers - 1) + " recomputed blocks");
      act(block + alloc.values(s.hidden), "the last block run again (" + block_what + ", and its output)");
    } else {
      act(kept_blocks, "saved by " + std::to_string(layers) + " blocks (" + block_what + ")");
    }
    act(static_cast<size_t>(std::max<int64_t>(extra, 0)),
        "gradients alive at the widest point of the block's backward");
  }

  if (dev.is_cuda()) {
    plan.lines.push_back({MemoryCategory::Workspace,
                          allocation_bytes(static_cast<double>(kCublasLtWorkspaceBytes), dev),
                          "cuBLASLt workspace (held by the context)"});
    // cudnn-frontend's SDPA backward workspace: dQ accumulated in F32 [B, H, T, Dh], the softmax sums
    // (dO . O) [B, H, T] in F32, and with grouped KV heads dK and dV over all query heads before their
    // reduction, in the compute dtype; the engine's own scratch is not included (an estimate).
    const bool grouped = m.num_key_value_heads != m.num_attention_heads;
    const double attention_workspace = s.tokens * s.hidden * 4 + s.tokens * s.heads * 4 +
                                       (grouped ? 2 * s.tokens * s.hidden * compute_bytes : 0);
    plan.lines.push_back(
        {MemoryCategory::Workspace, allocation_bytes(attention_workspace, dev),
         std::string("largest transient: cuDNN attention backward (dQ in f32, softmax sums") +
             (grouped ? ", dK and dV over all query heads)" : ")") + ", estimated"});
  }
  return plan;
}

}  // namespace coat::models
