#include "coat/train/memory_advice.h"

#include <algorithm>
#include <cstdio>
#include <vector>

namespace coat::train {

namespace {

std::string recipe_words(const TrainConfig& c) {
  using models::RecipeKind;
  const RecipeKind recipe = c.precision.recipe;
  if (recipe == RecipeKind::FP32) return "fp32 weights, gradients, AdamW states and activations";
  if (recipe == RecipeKind::BF16) {
    return "bf16: BF16 compute weights and activations, FP32 masters and gradients";
  }
  std::string words(models::to_string(recipe));
  words += ": FP8 (e4m3) copies of the block linears' weights and their transposes";
  if (recipe == RecipeKind::FP8Block) {
    words += " (one scale per 128x128 block; inputs and gradients per 1x128 group)";
  }
  words += ", quantised from the FP32 masters (no BF16 copy of the FP8 blocks' matrices), FP32 gradients; ";
  if (recipe == RecipeKind::Coat) {
    words += "saved activations compressed (norm and SwiGLU inputs in e4m3 with 1x16 group scales, linear inputs "
             "in e4m3";
    words += c.precision.compress_attention ? ")" : ", attention in BF16)";
  } else if (recipe == RecipeKind::FP8Block) {
    words += "linear inputs saved in e4m3 (1x128 groups along the tokens, as the wgrad takes them), the other "
             "saved activations in BF16";
  } else {
    words += "linear inputs saved in e4m3 (the transposes the forward quantised, as the wgrad takes them), the "
             "other saved activations in BF16";
  }
  const models::PrecisionRecipe r = recipe_of(c);
  if (r.compress_attention) {
    words += "; attention's q, k, v and output saved in e4m3 with 1x16 group scales (precision.compress_attention)";
  }
  if (!r.keep_weight_transpose) {
    words += "; the weights' e4m3 transposes made in the backward, one linear at a time "
             "(precision.cache_weight_transpose = false)";
  }
  if (!r.bf16_layers.empty()) {
    std::string list;
    for (int64_t layer : r.bf16_layers) list += (list.empty() ? "" : ", ") + std::to_string(layer);
    words += "; blocks " + list + " in bf16 (precision.bf16_layers)";
  }
  if (c.optim.apply_in_backward) words += "; the optimizer applied during the backward (optim.apply_in_backward)";
  return words;
}

size_t planned_total(TrainConfig c, int64_t micro_batch, models::Recompute recompute) {
  c.train.micro_batch_size = micro_batch;
  c.train.recompute = recompute;
  return memory_plan(c).total();
}

}  // namespace

models::MemoryPlanInput memory_plan_input(const TrainConfig& c) {
  models::MemoryPlanInput in;
  in.micro_batch_size = c.train.micro_batch_size;
  in.seq_len = c.data.seq_len;
  in.param_dtype = DType::F32;
  in.compute_dtype = c.precision.computes_in_bf16() ? DType::BF16 : DType::F32;
  in.recipe = recipe_of(c);
  in.exp_avg = exp_avg_spec(c.optim);
  in.exp_avg_sq = exp_avg_sq_spec(c.optim);
  in.recompute = c.train.recompute;
  in.world_size = c.dist.shard_size > 0 ? std::min(c.dist.shard_size, c.ranks()) : c.ranks();  // the shard group
  in.share_block_grads = c.optim.apply_in_backward && in.world_size == 1;
  in.shard_align = shard_alignment(c.optim);
  in.reshard_after_forward = c.dist.reshard_after_forward;
  in.fp8_all_gather = c.dist.fp8_all_gather;
  in.prefetch = c.dist.prefetch;
  in.device = c.train.compute_device();
  return in;
}

models::MemoryPlan memory_plan(const TrainConfig& c) {
  return models::plan_memory(c.model, memory_plan_input(c));
}

std::string describe_memory_plan(const TrainConfig& c, size_t device_bytes, uint64_t host_bytes) {
  const models::MemoryPlan plan = memory_plan(c);
  char line[512];
  std::snprintf(line, sizeof line,
                "memory plan per device (%s%s, micro-batch %lld x %lld tokens, %s; train.recompute = %s):\n",
                std::string(to_string(c.train.device)).c_str(),
                c.ranks() > 1 ? (", one of " + std::to_string(c.ranks()) + " ranks sharding the model").c_str() : "",
                static_cast<long long>(c.train.micro_batch_size), static_cast<long long>(c.data.seq_len),
                recipe_words(c).c_str(), std::string(models::to_string(c.train.recompute)).c_str());
  std::string out = line + plan.str();
  // What a rank writes at each save: its masters and optimizer states (a rank file, give or take its index).
  const size_t copy = plan.bytes(MemoryCategory::MasterWeights) + plan.bytes(MemoryCategory::OptimizerState);
  const int64_t keep = c.checkpoint.keep_last;
  out += "checkpoints on disk: about " + models::format_bytes(static_cast<double>(copy)) + " per rank and save; " +
         (keep > 0 ? "checkpoint.keep_last = " + std::to_string(keep) + " holds up to " + std::to_string(keep + 1) +
                         " of them per rank" +
                         (c.checkpoint.async ? " (a save overwrites the one it retires; the first saves' files are "
                                               "reserved at the start)"
                                             : " (the oldest goes once the new one is complete)")
                   : std::string("checkpoint.keep_last = 0 keeps every one")) +
         "\n";
  if (c.checkpoint.async) {
    // The asynchronous checkpoint's host copy of what the rank writes (train/async_saver.h): not device
    // memory on CUDA, the same memory again on the CPU.
    out += "plus " + models::format_bytes(static_cast<double>(copy)) + " of " +
           (c.train.device == DeviceKind::CUDA ? "pinned host" : "host") +
           " memory for the checkpoint snapshot (checkpoint.async; false saves without it)\n";
    if (host_bytes > 0) {
      out += "host memory here: " + models::format_bytes(static_cast<double>(host_bytes)) +
             " available (MemAvailable); the snapshot copy of one rank " +
             (copy <= host_bytes ? "fits" : "does NOT fit: set checkpoint.async = false") + "\n";
    }
  }
  if (device_bytes == 0) return out;
  const bool cuda = c.train.device == DeviceKind::CUDA;
  const size_t reserve = cuda ? kCudaContextReserveBytes : 0;
  const size_t usable = device_bytes > reserve ? device_bytes - reserve : 0;
  const auto fmt = [](size_t b) { return models::format_bytes(static_cast<double>(b)); };
  std::snprintf(
      line, sizeof line, "device memory: %s%s", fmt(device_bytes).c_str(),
      cuda ? (", of which about " + fmt(reserve) + " go to the CUDA context and libraries").c_str() : "");
  out += line;
  if (plan.total() <= usable) {
    return out + ": the plan fits with " + fmt(usable - plan.total()) + " to spare\n";
  }
  out += ": the plan needs " + fmt(plan.total() - usable) + " more than the " + fmt(usable) + " available\n";

  std::vector<std::string> suggestions;
  const int64_t global = c.train.global_batch_size;
  const int64_t micro = c.train.micro_batch_size;
  using models::Recompute;
  const auto fits = [&](int64_t mb, Recompute rc) { return planned_total(c, mb, rc) <= usable; };
  const auto largest_fitting = [&](Recompute rc) -> int64_t {
    for (int64_t mb = micro; mb >= 1; --mb) {
      if (global % mb == 0 && fits(mb, rc)) return mb;
    }
    return 0;
  };
  const auto describe = [&](int64_t mb, Recompute rc) {
    std::string s;
    if (mb != micro) {
      s += "train.micro_batch_size=" + std::to_string(mb) + " (" + std::to_string(global / mb) +
           " micro-batches per step)";
    }
    if (rc != c.train.recompute) {
      s += std::string(s.empty() ? "" : " with ") + "train.recompute=" + std::string(models::to_string(rc));
    }
    return s + ": " + fmt(planned_total(c, mb, rc));
  };
  const int64_t as_configured = largest_fitting(c.train.recompute);
  const models::PrecisionRecipe recipe = recipe_of(c);
  // The FP8 weights' transposes made in the backward (one transpose copy per linear and step) cost least of
  // all: named first where that alone fits.
  if (c.precision.cache_weight_transpose && recipe.fp8_linears && !recipe.block_scaled) {
    TrainConfig made = c;
    made.precision.cache_weight_transpose = false;
    const size_t total = memory_plan(made).total();
    if (total <= usable)
      suggestions.push_back("precision.cache_weight_transpose=false (each FP8 weight's transpose made in the "
                            "backward): " + fmt(total));
  }
  // q, k and v made again (one GEMM and RoPE per block) cost far less than whole blocks: named first where
  // they fit at the configured micro-batch.
  const bool qkv_allowed = models::first_block_scaled_qkv(recipe, c.model.num_hidden_layers) < 0;
  if (c.train.recompute == Recompute::None && qkv_allowed && fits(micro, Recompute::Qkv)) {
    suggestions.push_back(describe(micro, Recompute::Qkv));
  }
  if (c.train.recompute != Recompute::Blocks) {
    const int64_t recomputing = largest_fitting(Recompute::Blocks);
    if (recomputing == micro) suggestions.push_back(describe(micro, Recompute::Blocks));
    if (as_configured > 0) suggestions.push_back(describe(as_configured, c.train.recompute));
    if (recomputing > 0 && recomputing != micro && recomputing > as_configured) {
      suggestions.push_back(describe(recomputing, Recompute::Blocks));
    }
  } else if (as_configured > 0) {
    suggestions.push_back(describe(as_configured, c.train.recompute));
  }
  if (!c.optim.apply_in_backward) {
    // The optimizer applied during the backward: the blocks share one gradient buffer (one micro-batch per step).
    TrainConfig shared = c;
    shared.optim.apply_in_backward = true;
    for (int64_t mb = micro; mb >= 1; --mb) {
      shared.train.micro_batch_size = shared.train.global_batch_size = mb;
      const size_t total = memory_plan(shared).total();
      if (total > usable) continue;
      suggestions.push_back("optim.apply_in_backward=true (the blocks share one gradient buffer) with "
                            "train.global_batch_size=train.micro_batch_size=" + std::to_string(mb) +
                            " and optim.clip_grad_norm=0: " + fmt(total));
      break;
    }
  }
  if (suggestions.empty()) {
    const models::MemoryPlan plan_one = [&] {
      TrainConfig one = c;
      one.train.micro_batch_size = 1;
      one.train.recompute = Recompute::Blocks;
      return memory_plan(one);
    }();
    const size_t fixed =
        plan_one.bytes(MemoryCategory::Weights) + plan_one.bytes(MemoryCategory::MasterWeights) +
        plan_one.bytes(MemoryCategory::Gradients) + plan_one.bytes(MemoryCategory::OptimizerState);
    std::string s = "nothing fits at train.micro_batch_size=1 with train.recompute=blocks (" +
                    fmt(plan_one.total()) + ")";
    if (fixed > usable) {
      const auto fp8 = [](const ops::MomentSpec& m) {
        return m.encoding == ops::MomentEncoding::FP8 || m.encoding == ops::MomentEncoding::FP8Expand;
      };
      s += ": the weights, gradients and AdamW states alone take " + fmt(fixed) + "; shard them over more GPUs";
      if (!fp8(exp_avg_spec(c.optim)) || !fp8(exp_avg_sq_spec(c.optim)))
        s += ", or store the AdamW moments in less (optim.state_dtype = bf16, fp8_expand)";
    } else {
      s += "; shorten data.seq_len";
    }
    suggestions.push_back(s);
  }
  // Sharding over more ranks divides the masters, gradients and states: the fewest that fit.
  for (int64_t world = c.ranks() * 2; world <= 1024; world *= 2) {
    TrainConfig wider = c;
    wider.dist.world_size = world;
    if (wider.train.global_batch_size % (wider.train.micro_batch_size * world) != 0)
      wider.train.global_batch_size = wider.train.micro_batch_size * world;
    const size_t total = memory_plan(wider).total();
    if (total > usable) continue;
    suggestions.push_back("shard over " + std::to_string(world) + " GPUs (mpirun -np " + std::to_string(world) +
                          (wider.train.global_batch_size != c.train.global_batch_size
                               ? ", train.global_batch_size=" + std::to_string(wider.train.global_batch_size)
                               : std::string()) +
                          "): " + fmt(total) + " per GPU");
    break;
  }
  out += "suggestions:\n";
  for (const std::string& s : suggestions) out += "  - " + s + "\n";
  return out;
}

}  // namespace coat::train
