// The memory plan of a training config (its recipe, micro-batch, recomputation and device) and what to
// change when it does not fit the device: printed by coat-train --dry-run, and by the trainer when a step
// runs out of device memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "coat/models/memory_plan.h"
#include "coat/train/train_config.h"

namespace coat::train {

/// Device memory that the CUDA context, cuBLASLt and cuDNN take outside our allocator (their code, handles
/// and internal buffers): about this much of a GPU is not available to the plan.
inline constexpr size_t kCudaContextReserveBytes = size_t{1} << 30;

/// The plan's input from the config: precision.recipe fp32 is F32 everywhere; bf16 is BF16 compute weights
/// and activations with FP32 masters and gradients; fp8 adds the FP8 copies of the block linears' weights
/// (and their transposes), and coat also compresses the blocks' saved activations, both except in
/// precision.bf16_layers (recipe_of; models/memory_plan.h). The AdamW state bytes follow
/// optim.exp_avg_dtype / exp_avg_sq_dtype (under coat fp8_expand unless set).
models::MemoryPlanInput memory_plan_input(const TrainConfig& config);
models::MemoryPlan memory_plan(const TrainConfig& config);

/// The plan as a table under a header naming its device, micro-batch, recipe and recomputation. With
/// device_bytes > 0 (the device's memory), says whether it fits (after kCudaContextReserveBytes on CUDA)
/// and, when it does not, what would: train.recompute=blocks, the largest train.micro_batch_size that
/// divides train.global_batch_size and fits (with and without recomputation), or, when even the weights,
/// gradients and optimizer states do not fit, what shrinks those. With host_bytes > 0 (the host memory
/// available, e.g. available_host_bytes()), says whether one rank's checkpoint.async snapshot copy fits in it.
std::string describe_memory_plan(const TrainConfig& config, size_t device_bytes, uint64_t host_bytes = 0);

}  // namespace coat::train
