// Loading a model (weights only) from a native checkpoint, for generation, export and evaluation.
#pragma once

#include <filesystem>
#include <memory>

#include "coat/core/context.h"
#include "coat/models/transformer.h"
#include "coat/train/train_config.h"

namespace coat::train {

/// A checkpoint directory itself, or a run directory (its newest complete checkpoint).
std::filesystem::path resolve_checkpoint_dir(const std::filesystem::path& path);

struct LoadedModel {
  std::unique_ptr<models::Transformer> model;
  nlohmann::json meta;               ///< the checkpoint's meta.json
  std::filesystem::path checkpoint;  ///< the directory it came from
};

/// Builds the model its meta.json describes (without gradient buffers) and reads its weights.
LoadedModel load_model(const std::filesystem::path& path, const ContextPtr& context);

}  // namespace coat::train
