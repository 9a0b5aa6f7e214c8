// Loading a model (weights only) from a native checkpoint, for generation, export and evaluation.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>

#include "coat/core/context.h"
#include "coat/io/checkpoint.h"
#include "coat/models/transformer.h"
#include "coat/train/train_config.h"

namespace coat::train {

using io::resolve_checkpoint_dir;  // a checkpoint directory, or a run directory's newest complete checkpoint

struct LoadedModel {
  std::unique_ptr<models::Transformer> model;
  nlohmann::json meta;               ///< the checkpoint's meta.json
  std::filesystem::path checkpoint;  ///< the directory it came from
};

/// Builds the model its meta.json describes (without gradient buffers) and reads its weights.
LoadedModel load_model(const std::filesystem::path& path, const ContextPtr& context);
/// The same, with gradient buffers when `with_grads` and, with a `compute_dtype` (BF16 mixed precision as the
/// trainer's bf16 recipe), F32 master weights beside a compute copy refreshed from them after loading.
LoadedModel load_model(const std::filesystem::path& path, const ContextPtr& context, bool with_grads,
                       std::optional<DType> compute_dtype);

}  // namespace coat::train
