// The memory one training step takes on a device, by category, predicted from the configuration before
// anything is allocated (coat-train --dry-run prints it; the trainer prints it on out-of-memory).
//
// Weights, master weights, gradients and optimizer states are counted from the flat units the model
// allocates (unit_layout.h), each buffer rounded as the device's allocator rounds it. Activations are
// counted from the save policy of each nn function (what it records as saved on the tape), and the peak
// is the largest of these moments of a step: the end of the forward (everything saved, plus the logits and
// the logits' gradient that the fused cross-entropy makes), the backward of the LM head, the backward
// of the last block (its saved tensors, or under recomputation the block run again, plus the gradients
// alive at the block's widest point, or what its forward run again holds when that is wider), and the
// widest point of a block's forward (what the blocks saved so far plus the block's intermediates that it
// does not save as they are: under coat its BF16 tensors whose compressed or FP8 copies it saves). On CUDA
// the workspace adds the cuBLASLt workspace and the largest transient buffer of a backward (cuDNN's attention
// backward).
//
// The precision recipe (precision_recipe.h) changes two things. Weights: every block linear that runs FP8
// GEMMs keeps the E4M3 codes of W [N, K] and of W^T [K, N] with their per-tensor scale and inverse
// (nn::Fp8Weights: 2 bytes per parameter; under fp8_block the F32 scales of their 128x128 blocks instead,
// nn::Fp8BlockWeights); a block whose linears all run FP8 keeps no BF16 copy of its matrices
// (they are quantised from the masters), only of its norm weights. Activations: under fp8 and fp8_block a block saves
// what it saves under bf16; under coat its norm inputs and SwiGLU input are kept as E4M3 codes with one F32
// scale per 1x16 group (nn/compressed_save.h; BF16 where the width is not a multiple of 16), and the inputs
// of its q/k/v, gate/up and down projections as the E4M3 transposed codes with their scale and inverse (the
// o projection's input is the attention output, kept anyway). Blocks in bf16_layers plan as bf16.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "coat/core/device.h"
#include "coat/core/dtype.h"
#include "coat/core/memory_stats.h"
#include "coat/models/model_config.h"
#include "coat/models/precision_recipe.h"
#include "coat/models/transformer.h"
#include "coat/ops/quantized_moment.h"

namespace coat::models {

struct MemoryPlanInput {
  int64_t micro_batch_size = 1;
  int64_t seq_len = 1;
  DType param_dtype = DType::F32;    ///< master weights and gradients (the weights too when compute == param)
  DType compute_dtype = DType::F32;  ///< the compute copy of the weights; every activation is in this dtype
  ops::MomentSpec exp_avg{};     ///< storage of AdamW's first moment (F32 by default)
  ops::MomentSpec exp_avg_sq{};  ///< storage of the second moment
  Recompute recompute = Recompute::None;
  Device device = Device::cpu();  ///< allocation rounding; CUDA adds its workspaces
  /// Which blocks run FP8 linears and compress their saved activations (make_recipe; the default plans no
  /// FP8 anywhere). FP8 recipes need compute_dtype BF16.
  PrecisionRecipe recipe{};
  /// The block units share one gradient buffer (optim.apply_in_backward, TransformerOptions).
  bool share_block_grads = false;
  /// Ranks the units are sharded over (FSDP, dist/fsdp.h): masters, compute copies, gradients and AdamW
  /// states are each rank's slices (shard_align elements a multiple); the gathered units in use and the
  /// whole gradient of the unit in its backward are counted as communication buffers.
  int64_t world_size = 1;
  int64_t shard_align = 128;
  bool reshard_after_forward = true;  ///< false: every unit stays gathered from its forward to its backward
  /// Blocks whose linears all run FP8 are gathered as E4M3 codes (dist.fp8_all_gather): 1 byte per element,
  /// the codes being the FP8 cache's W (its W^T and, under fp8_block, the block scales are made locally), and
  /// their vectors in BF16.
  bool fp8_all_gather = false;
  /// Units whose all-gathers are issued ahead (dist.prefetch): each is one more gathered unit in memory.
  int64_t prefetch = 0;
};

struct MemoryPlanLine {
  MemoryCategory category;
  size_t bytes;
  std::string what;  ///< how it was counted
};

struct MemoryPlan {
  std::vector<MemoryPlanLine> lines;  ///< in category order; a category may have several lines
  /// What the tape holds for backward at the end of the forward (Tape::saved_bytes: distinct storages,
  /// unrounded), the token ids included.
  size_t saved_bytes = 0;
  std::string activation_peak;  ///< the moment of the step where the activations peak

  size_t total() const;
  size_t bytes(MemoryCategory category) const;
  /// One line per category (its parts indented below it when there are several) and the total.
  std::string str() const;
};

MemoryPlan plan_memory(const ModelConfig& model, const MemoryPlanInput& in);

/// "1.23 GiB", "456.7 MiB", "12 B".
std::string format_bytes(double bytes);

}  // namespace coat::models
