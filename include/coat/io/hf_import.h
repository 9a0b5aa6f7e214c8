// HF model directories into coat-train: config.json (models::ModelConfig::from_hf_json) and the
// safetensors weights (model.safetensors, or model.safetensors.index.json and its shards), checked so that
// an import is right or refused: nothing the config or the files hold is dropped without a word.
#pragma once

#include <filesystem>

#include "coat/models/model_config.h"
#include "coat/models/transformer.h"

namespace coat::io {

/// Reads <hf_dir>/config.json: IoError when it cannot be read or parsed, ConfigError (naming the key) for a
/// setting whose numbers coat-train would not reproduce.
models::ModelConfig read_hf_config(const std::filesystem::path& hf_dir);

/// Copies the weights of an HF model directory into an unsharded model's master weights (and its compute
/// copies) (F32, BF16, F16 or F64 in the files, converted exactly to the masters' dtype). IoError naming the
/// tensor and its file for: a parameter the files lack, a shape other than the config implies, a dtype that
/// is not a float, and a tensor the model does not use (q_proj.bias, ...: dropped, our numbers would differ
/// from transformers'). Allowed extras are the ones transformers ignores itself: rotary_emb.inv_freq buffers,
/// and lm_head.weight when the embeddings are tied.
void load_hf_weights(const std::filesystem::path& hf_dir, models::Transformer& model);

struct HfImport {
  models::ModelConfig config;
  std::filesystem::path checkpoint;  ///< the step-0 checkpoint directory written
};

/// read_hf_config and load_hf_weights (on the CPU, F32 masters), then a weights-only native checkpoint at
/// step 0 in the run directory `output` (start a run from it with train.init_from).
HfImport import_hf(const std::filesystem::path& hf_dir, const std::filesystem::path& output);

}  // namespace coat::io
