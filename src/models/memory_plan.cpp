#include "coat/models/memory_plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "coat/backend/block_scale_layout.h"
#include "coat/backend/moment_codec.h"
#include "coat/models/unit_layout.h"
#include "coat/models/unit_shard.h"
#include "coat/nn/compressed_save.h"
#include "coat/ops/quantized_moment.h"

namespace coat::models {

namespace {

// The CUDA context's cuBLASLt workspace, held for the context's lifetime (cuda::CudaContext::
// kCublasLtWorkspaceBytes; tests/train/test_memory_plan.cpp checks that the two agree).
constexpr size_t kCublasLtWorkspaceBytes = size_t{32} << 20;

// The FP8 weight cache's bytes per parameter kept from one step to the next, in words.
std::string kept_bytes_words(int bytes) {
  if (bytes == 0) return " parameters, none kept between uses";
  return " parameters, " + std::to_string(bytes) + (bytes == 1 ? " byte each" : " bytes each");
}

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

// What block `layer` keeps in FP8 under the recipe (precision_recipe.h).
struct BlockPrecision {
  bool compress = false;           // norm inputs and the SwiGLU input as E4M3 1x16 groups (coat)
  bool fp8_qkv_input = false;      // the q/k/v projection keeps its E4M3 transposed input (every FP8 recipe)
  bool fp8_gate_up_input = false;  // the gate/up projection likewise
  bool fp8_down = false;           // the down projection runs FP8 GEMMs
  bool fp8_down_input = false;     // and keeps its E4M3 transposed input (every FP8 recipe)
  bool block_scaled = false;       // the FP8 GEMMs take 128-block scales (fp8_block, nn::linear_fp8_block)
  bool compress_qkv = false;       // attention keeps q, k, v as E4M3 1x16 groups (precision.compress_attention)
  bool compress_out = false;       // and its output, which the o projection then keeps as its own FP8 input
  bool fp8_out_input = false;      // the o projection keeps its E4M3 transposed input (not the attention's output)
  bool remake_qkv = false;         // train.recompute = qkv: attention keeps no q, k, v; its backward makes them again

  static BlockPrecision of(const PrecisionRecipe& r, int64_t layer, Recompute recompute) {
    BlockPrecision b;
    b.block_scaled = r.linear(layer, LinearRole::GateUp).block_scaled;
    b.compress = r.compresses(layer);
    b.fp8_qkv_input = r.linear(layer, LinearRole::Qkv).save_fp8_input;
    b.fp8_gate_up_input = r.linear(layer, LinearRole::GateUp).save_fp8_input;
    b.fp8_down = r.linear(layer, LinearRole::Down).fp8;
    b.fp8_down_input = r.linear(layer, LinearRole::Down).save_fp8_input;
    b.remake_qkv = recompute == Recompute::Qkv;
    b.compress_qkv = !b.remake_qkv && r.compresses_attention_qkv(layer);
    b.compress_out = r.compresses_attention_out(layer);
    b.fp8_out_input = r.linear(layer, LinearRole::Out).save_fp8_input;
    return b;
  }
};

// Per-tensor FP8 (ops::Fp8PerTensor) keeps, besides its codes, a scale and its inverse: F32 [1] each.
constexpr int kFp8TensorScales = 2;

// The F32 scales of a 128x128-blocked W [out, in] and of W^T (nn::Fp8BlockWeights): [rows/128, round_up(cols/128,
// 4)] each, cuBLASLt's layout (coat/backend/block_scale_layout.h). Partial blocks count whole (such a layer is
// refused when it runs; the plan still sizes it).
size_t block_scale_bytes(int64_t out, int64_t in, const Device& device) {
  const auto scales = [&device](int64_t rows, int64_t cols) {
    const int64_t row_blocks = fp8block::round_up(rows, fp8block::kBlock) / fp8block::kBlock;
    const int64_t col_blocks = fp8block::round_up(cols, fp8block::kBlock) / fp8block::kBlock;
    const int64_t count = row_blocks * fp8block::round_up(col_blocks, fp8block::kScaleLdMultiple);
    return allocation_bytes(static_cast<double>(count) * 4, device);
  };
  return scales(out, in) + scales(in, out);
}

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
  /// A per-tensor FP8 copy of a [B*T, width] tensor (its codes or transposed codes) with its two scales.
  size_t fp8(double width) const { return (*this)(s.tokens * width, 1) + kFp8TensorScales * (*this)(1, 4); }
  /// The same with both the codes and the transposed codes (an FP8 GEMM operand quantised for two GEMMs).
  size_t fp8_pair(double width) const { return fp8(width) + (*this)(s.tokens * width, 1); }
  /// A [B*T, width] tensor or its transpose in 1x128 groups (ops::quantize_1x128): codes and one F32 scale per
  /// group (B*T and width multiples of 128 under fp8_block).
  size_t blocked(double width) const { return (*this)(s.tokens * width, 1) + (*this)(s.tokens * width / 128, 4); }
  /// An FP8 linear's input kept for its wgrad instead of the BF16 input: per-tensor E4M3 transposed codes
  /// (coat), or the 1x128 groups of its transpose (fp8_block).
  size_t fp8_input(double width, bool block_scaled) const { return block_scaled ? blocked(width) : fp8(width); }
  /// A [B*T, width] tensor kept for a backward: as it is, or, compressed, as E4M3 codes with one F32 scale
  /// per 1x16 group (nn::save_input) when the width allows.
  size_t kept(double width, bool compress) const {
    if (!compress || static_cast<int64_t>(width) % nn::kCompressGroup != 0) return values(width);
    return (*this)(s.tokens * width, 1) +
           (*this)(s.tokens * width / static_cast<double>(nn::kCompressGroup), 4);
  }
};

// What one block keeps for its backward, following each function's save policy (nn/*.h); storages shared
// by several functions count once. The input norm saves x (the block's input) and its statistics; the
// q/k/v projection saves the norm's output; the attention saves q and k after RoPE, v, its output (which the
// o projection saves too) and the log-sum-exp: as separate tensors or as one packed qkv projection rotated in
// place (nn::packed_attention), the same bytes; the post-attention norm saves the residual and statistics;
// the gate/up projection saves the norm's output; SwiGLU saves gate and up (or the packed gate_up); the
// down projection saves their product. Under coat the norm and SwiGLU inputs are compressed and the
// projections keep FP8 transposed inputs (BlockPrecision); attention is unchanged unless
// precision.compress_attention compresses q, k, v and the output (the o projection then keeps its own input).
size_t attention_saved(const Counter& c, const BlockPrecision& b) {
  const ActivationShapes& s = c.s;
  return c.kept(s.hidden, b.compress) + c.norm_stats()               // input norm: x, statistics
         + (b.fp8_qkv_input ? c.fp8_input(s.hidden, b.block_scaled) : c.values(s.hidden))  // q/k/v: its input
         + (b.remake_qkv ? 0 : c.kept(s.hidden + 2 * s.kv, b.compress_qkv))  // attention: q, k after RoPE, v
         + c.kept(s.hidden, b.compress_out) + c.stats(s.heads)        // attention: output, lse [B, H, T]
         + (b.fp8_out_input ? c.fp8_input(s.hidden, b.block_scaled) : 0);  // o projection: its own input
}

size_t mlp_saved(const Counter& c, const BlockPrecision& b) {
  const ActivationShapes& s = c.s;
  return c.kept(s.hidden, b.compress) + c.norm_stats()                   // post-attention norm: h, stats
         + (b.fp8_gate_up_input ? c.fp8_input(s.hidden, b.block_scaled) : c.values(s.hidden))  // gate/up: input
         + (b.compress ? c.kept(2 * s.ffn, true) : 2 * c.values(s.ffn))  // swiglu: gate and up
         + (b.fp8_down_input ? c.fp8_input(s.ffn, b.block_scaled) : c.values(s.ffn));  // down: their product
}

size_t block_saved(const Counter& c, const BlockPrecision& b) {
  return attention_saved(c, b) + mlp_saved(c, b);
}

// The final norm (its input and statistics), the LM head (the final norm's output) and the fused
// cross-entropy (the logits' gradient, made in the forward).
size_t head_saved(const Counter& c) {
  return c.values(c.s.hidden) + c.norm_stats() + c.values(c.s.hidden) + c.values(c.s.vocab);
}

// Gradients alive beyond the block's saved tensors at the widest point of a block's backward: at the
// SwiGLU backward, the gradient of the block's output (held for the residual branch), the gradient of the
// product and the gradients of gate and up (and, compressed, gate and up restored), while the product itself
// was just freed; at an FP8 down projection's backward, the same output gradient, its E5M2 codes and
// transposed codes, and either the product quantised again (fp8) or the product's gradient (fp8_block: the
// wgrad operands in 1x128 groups, below, and at its gate/up projection too); at the attention backward, the
// residual gradient, the output's gradient and dq, dk, dv, while the MLP's tensors, the residual and the
// post-attention norm's statistics are gone.
int64_t block_backward_extra(const Counter& c, const BlockPrecision& b) {
  const ActivationShapes& s = c.s;
  const auto i64 = [](size_t v) { return static_cast<int64_t>(v); };
  const int64_t product = i64(b.fp8_down_input ? c.fp8_input(s.ffn, b.block_scaled) : c.values(s.ffn));
  const int64_t at_swiglu = i64(c.values(s.hidden) + c.values(s.ffn) + 2 * c.values(s.ffn) +
                                (b.compress ? c.values(2 * s.ffn) : 0)) -
                            product;
  int64_t at_down = b.fp8_down
                        ? i64(c.values(s.hidden) + c.fp8_pair(s.hidden) +
                              std::max(b.fp8_down_input ? 0 : c.fp8_pair(s.ffn), c.values(s.ffn)))
                        : 0;
  int64_t at_gate_up = 0;
  if (b.block_scaled) {
    // fp8_block (nn::linear_fp8_block): the output gradient in 1x128 groups both ways at once (dgrad's along
    // the features, wgrad's along the tokens: ops::quantize_1x128_pair), and the input's groups along the tokens
    // (kept from the forward, else made now). At the down projection: its output gradient, that gradient's two
    // groupings and, unless kept, the product's. At the gate/up projection: the block output's gradient, the
    // gradient of gate and up and its two groupings, while SwiGLU's gate and up and the product are freed.
    at_down = i64(c.values(s.hidden) + 2 * c.blocked(s.hidden) + (b.fp8_down_input ? 0 : c.blocked(s.ffn)));
    at_gate_up = i64(c.values(s.hidden) + c.values(2 * s.ffn) + 2 * c.blocked(2 * s.ffn)) - product -
                 i64(2 * c.values(s.ffn));
  }
  // Compressed, q, k, v and the output are restored for the attention backward; q, k and v made again likewise.
  const int64_t restored = i64((b.compress_qkv || b.remake_qkv ? c.values(s.hidden + 2 * s.kv) : 0) +
                               (b.compress_out ? c.values(s.hidden) : 0));
  const int64_t at_attention =
      i64(3 * c.values(s.hidden) + 2 * c.values(s.kv)) + restored - i64(mlp_saved(c, b));
  return std::max({at_swiglu, at_down, at_gate_up, at_attention});
}

// The block's input where the block does not save it as it is (the input norm compresses it): alive beside
// the block's saved tensors while the block runs forward (and, recomputing, until its backward ends).
size_t input_apart(const Counter& c, const BlockPrecision& b) {
  return b.compress ? c.values(c.s.hidden) : 0;
}

// Tensors alive beyond the block's saved ones (and its input) at the widest point of its forward. Every
// intermediate stays referenced until the block returns (Transformer::block), so the norms' outputs, the
// residual and the gate/up output that the block saves in FP8 or compressed exist in BF16 too (under bf16
// they are the saved tensors themselves); at the down projection besides its input (the SwiGLU output), the
// input's e4m3 codes (fprop's operand; with their 1x128 group scales under fp8_block) and the output; at the
// last residual add, the down projection's output and the block's output.
size_t block_forward_extra(const Counter& c, const BlockPrecision& b) {
  const ActivationShapes& s = c.s;
  const size_t unsaved = (b.fp8_qkv_input ? c.values(s.hidden) : 0)        // the input norm's output
                         + (b.compress ? c.values(s.hidden) : 0)           // the residual
                         + (b.fp8_gate_up_input ? c.values(s.hidden) : 0)  // the post-attention norm's output
                         + (b.compress ? c.values(2 * s.ffn) : 0)          // gate and up
                         + (b.compress_qkv || b.remake_qkv ? c.values(s.hidden + 2 * s.kv) : 0)  // q, k, v
                         + (b.compress_out ? c.values(s.hidden) : 0);      // the attention output
  const size_t at_down = unsaved + (b.fp8_down_input ? c.values(s.ffn) : 0) +
                         (b.fp8_down ? (b.block_scaled ? c.blocked(s.ffn) : c(s.tokens * s.ffn, 1)) : 0) +
                         c.values(s.hidden);
  const size_t at_add = unsaved + 2 * c.values(s.hidden);
  return std::max(at_down, at_add);
}

// The linear layers of a block with their weights' shapes [out, in].
struct BlockLinear {
  LinearRole role;
  int64_t out, in;
};

std::vector<BlockLinear> block_linears(const ModelConfig& m) {
  const int64_t h = m.hidden_size, kv = m.num_key_value_heads * m.head_dim(), f = m.intermediate_size;
  return {{LinearRole::Qkv, h + 2 * kv, h},
          {LinearRole::Out, h, h},
          {LinearRole::GateUp, 2 * f, h},
          {LinearRole::Down, h, f}};
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

namespace {

/// One process's units (world_size 1): masters, compute copies (vectors only for a block whose linears all
/// run FP8), gradients (one buffer for every block under share_block_grads) and AdamW states.
void plan_whole_units(const ModelConfig& m, const std::vector<UnitLayout>& units, const MemoryPlanInput& in,
                      MemoryPlan& plan) {
  const Device dev = in.device;
  const bool mixed = in.compute_dtype != in.param_dtype;
  const double param_bytes = static_cast<double>(dtype_size(in.param_dtype));
  const double compute_bytes = static_cast<double>(dtype_size(in.compute_dtype));
  int64_t padded = 0, fp8_only_blocks = 0;
  size_t weights = 0, masters = 0, grads = 0, states = 0, block_grad = 0, maxima = 0;
  int64_t maxima_units = 0;
  for (const UnitLayout& u : units) {
    const auto n = static_cast<double>(u.numel);
    padded += u.numel;
    // A block whose four linears all run FP8 has compute copies of its vectors only (Transformer).
    const bool is_block = u.name.rfind("layers.", 0) == 0;
    bool full = !mixed || !is_block;
    if (!full) {
      const int64_t layer = std::stoll(u.name.substr(7));
      for (const BlockLinear& l : block_linears(m)) full = full || !in.recipe.linear(layer, l.role).fp8;
    }
    if (full) {
      weights += allocation_bytes(n * (mixed ? compute_bytes : param_bytes), dev);
    } else {
      ++fp8_only_blocks;
      for (const auto& [name, shape] : u.params)
        if (shape.size() == 1) weights += allocation_bytes(static_cast<double>(shape_numel(shape)) * compute_bytes, dev);
      // The optimizer step's maxima of a block with per-tensor FP8 weights (train/unit_state.cpp).
      const int64_t layer = std::stoll(u.name.substr(7));
      bool per_tensor = false;
      for (const BlockLinear& l : block_linears(m)) per_tensor = per_tensor || in.recipe.linear(layer, l.role).per_tensor_fp8();
      if (per_tensor) {
        const int64_t granules = ops::step_maxima_count(u.numel);
        maxima += allocation_bytes(4.0 * static_cast<double>(granules), dev);
        ++maxima_units;
      }
    }
    masters += mixed ? allocation_bytes(n * param_bytes, dev) : 0;
    if (is_block && in.share_block_grads) {
      block_grad = allocation_bytes(n * param_bytes, dev);
    } else {
      grads += allocation_bytes(n * param_bytes, dev);
    }
    states += moment_allocation(in.exp_avg, u.numel, dev) + moment_allocation(in.exp_avg_sq, u.numel, dev);
  }
  grads += block_grad;
  std::string count = std::to_string(m.parameter_count()) + " parameters";
  if (padded != m.parameter_count()) count += " (" + std::to_string(padded) + " with alignment padding)";
  count += " in " + std::to_string(units.size()) + " units";
  count += " in " + std::string(dtype_name(mixed ? in.compute_dtype : in.param_dtype));
  if (fp8_only_blocks > 0)
    count += " (of " + std::to_string(fp8_only_blocks) + " blocks with FP8 linears only their norm weights)";
  plan.lines.push_back({MemoryCategory::Weights, weights, count});
  if (maxima_units > 0) {
    plan.lines.push_back({MemoryCategory::Weights, maxima,
                          "the optimizer step's maxima of " + std::to_string(maxima_units) +
                              " blocks' FP8 weights (F32, one per " + std::to_string(ops::kStepMaximaGranule) +
                              " parameters: their per-tensor scales without an amax pass)"});
  }
  if (mixed) {
    plan.lines.push_back({MemoryCategory::MasterWeights, masters,
                          "master copy in " + std::string(dtype_name(in.param_dtype))});
  }
  plan.lines.push_back({MemoryCategory::Gradients, grads,
                        "accumulated in " + std::string(dtype_name(in.param_dtype)) +
                            (in.share_block_grads ? "; the blocks share one buffer (optim.apply_in_backward)" : "")});
  char state_what[160];
  std::snprintf(state_what, sizeof state_what, "AdamW moments m %s, v %s: %.4g bytes per parameter",
                ops::moment_spec_str(in.exp_avg).c_str(), ops::moment_spec_str(in.exp_avg_sq).c_str(),
                static_cast<double>(states) / static_cast<double>(std::max<int64_t>(padded, 1)));
  plan.lines.push_back({MemoryCategory::OptimizerState, states, state_what});
}

/// A rank's part of a sharded model (world_size > 1): its slices of the masters, compute copies, gradients and
/// AdamW states (UnitShard), and the whole units it holds while they are in use.
/// Whether a sharded run gathers unit `u` as FP8 codes (MemoryPlanInput::fp8_all_gather).
bool layer_gathers_fp8_codes(int64_t layer, const MemoryPlanInput& in) {
  if (!in.fp8_all_gather || in.world_size <= 1) return false;
  for (LinearRole role : {LinearRole::Qkv, LinearRole::Out, LinearRole::GateUp, LinearRole::Down})
    if (!in.recipe.linear(layer, role).fp8) return false;
  return true;
}

bool gathers_fp8_codes(const UnitLayout& u, const MemoryPlanInput& in) {
  return u.name.rfind("layers.", 0) == 0 && layer_gathers_fp8_codes(std::stoll(u.name.substr(7)), in);
}

/// Elements of a unit's 1-D parameters (norm weights).
int64_t vector_elements(const UnitLayout& u) {
  int64_t n = 0;
  for (const auto& [name, shape] : u.params) n += shape.size() == 1 ? shape_numel(shape) : 0;
  return n;
}

void plan_sharded_units(const ModelConfig& m, const std::vector<UnitLayout>& units, const MemoryPlanInput& in,
                        MemoryPlan& plan) {
  const Device dev = in.device;
  const bool mixed = in.compute_dtype != in.param_dtype;
  const double param_bytes = static_cast<double>(dtype_size(in.param_dtype));
  const double compute_bytes = static_cast<double>(dtype_size(in.compute_dtype));
  const ShardSpec spec{0, static_cast<int>(in.world_size), in.shard_align};
  size_t weights = 0, masters = 0, grads = 0, states = 0, gathered_all = 0, gathered_max = 0, grad_max = 0;
  int64_t shard_elements = 0;
  bool any_codes = false;
  for (const UnitLayout& u : units) {
    const UnitShard s = UnitShard::of(u.numel, spec);
    const bool codes = gathers_fp8_codes(u, in);
    any_codes = any_codes || codes;
    const auto n = static_cast<double>(s.shard_numel);
    shard_elements += s.shard_numel;
    weights += allocation_bytes(n * (mixed ? compute_bytes : param_bytes), dev);
    masters += mixed ? allocation_bytes(n * param_bytes, dev) : 0;
    grads += allocation_bytes(n * param_bytes, dev);
    states += moment_allocation(in.exp_avg, s.shard_numel, dev) + moment_allocation(in.exp_avg_sq, s.shard_numel, dev);
    // An FP8-gathered block: its codes (1 byte per element) and its vectors in the compute dtype.
    const size_t whole = codes ? allocation_bytes(static_cast<double>(s.padded_numel()), dev) +
                                     allocation_bytes(static_cast<double>(vector_elements(u)) * compute_bytes, dev)
                               : allocation_bytes(static_cast<double>(s.padded_numel()) * compute_bytes, dev);
    gathered_all += whole;
    gathered_max = std::max(gathered_max, whole);
    grad_max = std::max(grad_max, allocation_bytes(static_cast<double>(s.padded_numel()) * param_bytes, dev));
  }
  const std::string of = " of " + std::to_string(in.world_size) + " ranks";
  plan.lines.push_back({MemoryCategory::Weights, weights,
                        "this rank's slices" + of + " (" + std::to_string(shard_elements) + " elements in " +
                            std::to_string(units.size()) + " units) in " +
                            std::string(dtype_name(mixed ? in.compute_dtype : in.param_dtype))});
  if (mixed) {
    plan.lines.push_back({MemoryCategory::MasterWeights, masters,
                          "master slices in " + std::string(dtype_name(in.param_dtype))});
  }
  plan.lines.push_back({MemoryCategory::Gradients, grads,
                        "gradient slices in " + std::string(dtype_name(in.param_dtype)) + ", reduce-scattered"});
  char state_what[160];
  std::snprintf(state_what, sizeof state_what, "AdamW moment slices m %s, v %s",
                ops::moment_spec_str(in.exp_avg).c_str(), ops::moment_spec_str(in.exp_avg_sq).c_str());
  plan.lines.push_back({MemoryCategory::OptimizerState, states, state_what});
  // In use at once: under reshard_after_forward the unit computing and, with a tied head, the embedding (it
  // stays from the embedding to the head); otherwise every unit from its forward to its backward. Plus the
  // whole gradient of the unit in its backward.
  // dist.prefetch: that many more units on their way (at most every unit).
  const auto in_flight = static_cast<size_t>(std::min<int64_t>(in.prefetch, static_cast<int64_t>(units.size())));
  const size_t gathered = in.reshard_after_forward
                              ? gathered_max * ((m.tie_word_embeddings ? 2 : 1) + in_flight)
                              : gathered_all;
  plan.lines.push_back({MemoryCategory::Communication, gathered + grad_max,
                        std::string(in.reshard_after_forward ? "the gathered unit in use" : "every unit gathered") +
                            (in.reshard_after_forward && in.prefetch > 0
                                 ? " and " + std::to_string(in_flight) + " prefetched"
                                 : std::string()) +
                            " in " + std::string(dtype_name(in.compute_dtype)) +
                            (any_codes ? " (the FP8 blocks' matrices as e4m3 codes)" : "") +
                            " and the whole gradient of the unit in its backward"});
  if (any_codes && in.recipe.block_scaled) {
    // dist::Fp8UnitGather under fp8_block: a rank's part of one matrix at a time in F32, zero-padded to whole
    // 128-row blocks (at most its slice, or the whole matrix, plus 127 rows each side), while it quantises.
    const int64_t cols = std::max(m.hidden_size, m.intermediate_size);
    const int64_t largest = 2 * m.intermediate_size * m.hidden_size;  // the fused gate/up matrix
    int64_t shard_max = 0;
    for (const UnitLayout& u : units) shard_max = std::max(shard_max, UnitShard::of(u.numel, spec).shard_numel);
    const double padded = static_cast<double>(std::min(largest, shard_max) + 2 * 127 * cols) * 4.0;
    plan.lines.push_back({MemoryCategory::Communication, allocation_bytes(padded, dev),
                          "fp8_block gather: a matrix part in f32, padded to whole 128-row blocks, while it is "
                          "quantised (transient)"});
  }
}

}  // namespace

MemoryPlan plan_memory(const ModelConfig& m, const MemoryPlanInput& in) {
  m.validate();
  COAT_ARG_CHECK(in.micro_batch_size > 0 && in.seq_len > 0, "plan_memory", "micro-batch ",
                 in.micro_batch_size, " and sequence length ", in.seq_len, " must be positive");
  COAT_ARG_CHECK(!in.recipe.fp8_linears || in.compute_dtype == DType::BF16, "plan_memory", "the ",
                 in.recipe.name, " recipe computes in bf16, not ", dtype_name(in.compute_dtype));
  MemoryPlan plan;
  const Device dev = in.device;
  const double compute_bytes = static_cast<double>(dtype_size(in.compute_dtype));

  // Parameters, gradients and AdamW states: one flat buffer per unit and role (or this rank's slice of it).
  const std::vector<UnitLayout> units = unit_layouts(m);
  if (in.world_size > 1) {
    plan_sharded_units(m, units, in, plan);
  } else {
    plan_whole_units(m, units, in, plan);
  }
  // The FP8 weight cache (nn::Fp8Weights): per FP8 block linear W [N, K], the E4M3 codes of W and of W^T and
  // the per-tensor scale and its inverse. Without W^T kept (precision.cache_weight_transpose = false), the
  // backward makes one linear's at a time: the largest of them is counted once.
  size_t cache = 0, block_cache_max = 0, transient_t = 0;
  int64_t fp8_linears = 0, fp8_blocks = 0, fp8_params = 0;
  const bool keep_t = in.recipe.keep_weight_transpose;
  for (int64_t layer = 0; layer < m.num_hidden_layers; ++layer) {
    bool any = false;
    size_t block_cache = 0;
    // A block gathered as FP8 codes: W's codes are the gathered buffer's (communication); only W^T is made here.
    const int copies = (layer_gathers_fp8_codes(layer, in) ? 0 : 1) + (keep_t ? 1 : 0);
    for (const BlockLinear& l : block_linears(m)) {
      const LinearRecipe r = in.recipe.linear(layer, l.role);
      if (!r.fp8) continue;
      const auto n = static_cast<double>(l.out * l.in);
      if (!keep_t) transient_t = std::max(transient_t, allocation_bytes(n, dev));
      block_cache += copies * allocation_bytes(n, dev) + (r.block_scaled ? block_scale_bytes(l.out, l.in, dev)
                                                                    : kFp8TensorScales * allocation_bytes(4, dev));
      fp8_params += l.out * l.in;
      ++fp8_linears;
      any = true;
    }
    cache += block_cache;
    block_cache_max = std::max(block_cache_max, block_cache);
    fp8_blocks += any ? 1 : 0;
  }
  // Sharded, a gathered unit's FP8 copies go with it (UnitStore::release_value).
  if (in.world_size > 1 && in.reshard_after_forward) cache = block_cache_max;
  cache += transient_t;
  if (fp8_linears > 0) {
    const bool codes_gathered = layer_gathers_fp8_codes(0, in);
    const char* what = codes_gathered ? (keep_t ? "FP8 weight cache: E4M3 W^T (W: the gathered codes) of "
                                                : "FP8 weight cache: one E4M3 W^T at a time (W: the gathered codes) of ")
                                      : (keep_t ? "FP8 weight cache: E4M3 W and W^T of "
                                                : "FP8 weight cache: E4M3 W, one W^T at a time, of ");
    plan.lines.push_back({MemoryCategory::Weights, cache,
                          std::string(what) +
                              std::to_string(fp8_linears) +
                              " linears in " + std::to_string(fp8_blocks) + " blocks" +
                              (in.world_size > 1 && in.reshard_after_forward ? ", one gathered block's at a time" : "") + " (" +
                              std::to_string(fp8_params) +
                              kept_bytes_words((codes_gathered ? 0 : 1) + (keep_t ? 1 : 0)) + ") and their " +
                              (in.recipe.block_scaled ? "128x128 block scales" : "per-tensor scales")});
  }

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

  // What each block keeps under the recipe; the last block's backward is the one planned.
  std::vector<BlockPrecision> precision;
  for (int64_t layer = 0; layer < m.num_hidden_layers; ++layer)
    precision.push_back(BlockPrecision::of(in.recipe, layer, in.recompute));
  const BlockPrecision& last = precision.back();

  // What the tape holds at the end of the forward: per block everything (or, recomputing, the block's
  // input alone), the head's tensors and the token ids (the embedding saves them; a view of the batch).
  size_t saved_blocks = 0, kept_blocks = 0;
  for (const BlockPrecision& b : precision) {
    saved_blocks += recompute ? exact.values(s.hidden) : block_saved(exact, b);
    kept_blocks += recompute ? alloc.values(s.hidden) : block_saved(alloc, b);
  }
  plan.saved_bytes = saved_blocks + head_saved(exact) + exact(s.tokens, 4);

  const size_t inputs = 2 * alloc(s.tokens, 4);  // ids and targets, I32
  const size_t block = block_saved(alloc, last);
  const size_t head = head_saved(alloc);
  const size_t logits = alloc.values(s.vocab);
  const int64_t backward_extra = block_backward_extra(alloc, last);
  const size_t forward_end = inputs + kept_blocks + head + logits;
  const size_t head_backward = inputs + kept_blocks + head + alloc.values(s.hidden);
  // Recomputing, the last block runs forward again beside the other blocks' inputs, its own input and the
  // gradient of its output, then backward: the wider of the two is planned.
  const auto forward_extra = static_cast<int64_t>(block_forward_extra(alloc, last));
  const bool rerun_is_wider = recompute && forward_extra > backward_extra;
  const int64_t extra = rerun_is_wider ? forward_extra : backward_extra;
  const size_t last_input = recompute ? input_apart(alloc, last) : 0;
  const size_t last_block_backward = static_cast<size_t>(
      static_cast<int64_t>(inputs + (recompute ? (layers - 1) * alloc.values(s.hidden) + last_input + block +
                                                     alloc.values(s.hidden)
                                               : kept_blocks)) +
      extra);
  // Without recomputation, the widest point of a block's forward: the blocks saved so far, the block's input
  // and what its forward holds beyond its saved tensors. Under bf16 this stays below the end of the forward.
  size_t block_forward = 0, saved_through = 0, widest_forward = 0, widest_layer = 0;
  if (!recompute) {
    size_t saved_so_far = 0;
    for (size_t layer = 0; layer < layers; ++layer) {
      const BlockPrecision& b = precision[layer];
      saved_so_far += block_saved(alloc, b);
      const size_t beyond = input_apart(alloc, b) + block_forward_extra(alloc, b);
      if (inputs + saved_so_far + beyond > block_forward) {
        block_forward = inputs + saved_so_far + beyond;
        saved_through = saved_so_far;
        widest_forward = beyond;
        widest_layer = layer;
      }
    }
  }
  // The blocks' layouts: as bf16 saves (fp8, fp8_block: their linear inputs as e4m3 codes), or compressed (coat);
  // blocks of both under bf16_layers.
  const auto layout = [&](const BlockPrecision& b) {
    const std::string bytes = "per block " + format_bytes(static_cast<double>(block_saved(alloc, b))) + ": ";
    const std::string remade = b.remake_qkv ? ", q, k and v made again in the backward (train.recompute = qkv)" : "";
    if (!b.compress) {
      const double qkv = b.remake_qkv ? 0 : s.hidden + 2 * s.kv;
      return bytes + per_token(5 * s.hidden + qkv + 3 * s.ffn) + " values/token + " +
             std::to_string(2 * s.stats_per_norm) + " norm statistics/token + log-sum-exp [B, " +
             per_token(s.heads) + ", T]" +
             (b.fp8_qkv_input ? std::string(", q/k/v, gate/up and down inputs as e4m3 codes of their transposes")
                              : std::string()) +
             remade;
    }
    return bytes +
           "norm and SwiGLU inputs in e4m3 with 1x16 group scales, q/k/v, gate/up and down inputs as " +
           "e4m3 transposed codes, attention in " + std::string(dtype_name(in.compute_dtype)) + remade;
  };
  const auto compressed = static_cast<size_t>(
      std::count_if(precision.begin(), precision.end(), [](const BlockPrecision& b) { return b.compress; }));
  std::string block_what = layout(last);
  if (compressed > 0 && compressed < layers) {
    const auto first = [&](bool compress) {
      return *std::find_if(precision.begin(), precision.end(),
                           [compress](const BlockPrecision& b) { return b.compress == compress; });
    };
    block_what = std::to_string(compressed) + " compressed, " + layout(first(true)) + "; " +
                 std::to_string(layers - compressed) + " in precision.bf16_layers, " + layout(first(false));
  }
  const auto act = [&plan](size_t bytes, std::string what) {
    plan.lines.push_back({MemoryCategory::Activations, bytes, std::move(what)});
  };
  act(inputs, "token ids and targets (i32)");
  const std::string all_blocks = "saved by " + std::to_string(layers) + " blocks (" + block_what + ")";
  if (forward_end >= head_backward && forward_end >= last_block_backward && forward_end >= block_forward) {
    plan.activation_peak = "at the end of the forward";
    act(kept_blocks,
        recompute ? "block inputs kept by " + std::to_string(layers) + " recomputed blocks" : all_blocks);
    act(head, "saved by the final norm, LM head and cross-entropy (the logits' gradient [B*T, V])");
    act(logits, "logits [B*T, V] (freed when the loss is computed)");
  } else if (head_backward >= last_block_backward && head_backward >= block_forward) {
    plan.activation_peak = "in the LM head's backward";
    act(kept_blocks,
        recompute ? "block inputs kept by " + std::to_string(layers) + " recomputed blocks" : all_blocks);
    act(head, "saved by the final norm, LM head and cross-entropy (the logits' gradient [B*T, V])");
    act(alloc.values(s.hidden), "gradient of the hidden states");
  } else if (last_block_backward >= block_forward) {
    plan.activation_peak =
        rerun_is_wider ? "in the last block's forward run again" : "in the last block's backward";
    if (recompute) {
      const size_t kept = layers - (last_input > 0 ? 0 : 1);
      act(kept * alloc.values(s.hidden),
          "block inputs kept by " + std::to_string(kept) + " recomputed blocks");
      act(block + alloc.values(s.hidden), "the last block run again (" + layout(last) + ", and its output)");
    } else {
      act(kept_blocks, all_blocks);
    }
    act(static_cast<size_t>(std::max<int64_t>(extra, 0)),
        rerun_is_wider ? "tensors alive at the widest point of the block's forward beyond what it saves"
                       : "gradients alive at the widest point of the block's backward");
  } else {
    plan.activation_peak = "in the forward of block " + std::to_string(widest_layer);
    act(saved_through, widest_layer + 1 == layers ? all_blocks
                                                  : "saved by blocks 0 to " + std::to_string(widest_layer) +
                                                        " (" + block_what + ")");
    act(widest_forward,
        "the block's input and tensors alive at the widest point of its forward beyond what it "
        "saves (BF16 originals of its compressed and FP8 copies, referenced until the block "
        "returns; the down projection's e4m3 input and output)");
  }

  if (dev.is_cuda()) {
    plan.lines.push_back({MemoryCategory::Workspace,
                          allocation_bytes(static_cast<double>(kCublasLtWorkspaceBytes), dev),
                          "cuBLASLt workspace (held by the context)"});
    // The FP8 range expansion's tables (moment_codec::kExpandTableBytes per FP8 format in use, held by the
    // context: cuda::ExpandTables).
    int expand_formats = 0;
    for (DType fmt : {DType::E4M3, DType::E5M2}) {
      const auto uses = [&](const ops::MomentSpec& ms) {
        return ms.encoding == ops::MomentEncoding::FP8Expand && ms.fp8 == fmt;
      };
      expand_formats += uses(in.exp_avg) || uses(in.exp_avg_sq) ? 1 : 0;
    }
    if (expand_formats > 0) {
      const double table_bytes = static_cast<double>(expand_formats * moment_codec::kExpandTableBytes);
      plan.lines.push_back({MemoryCategory::Workspace, allocation_bytes(table_bytes, dev),
                            "FP8 range expansion tables (decoded magnitudes and code bounds, held by the "
                            "context)"});
    }
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
