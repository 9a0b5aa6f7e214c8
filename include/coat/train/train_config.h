// The training configuration: one JSON document, one section per concern (model, data, train, optim,
// precision, dist, checkpoint, logging), read strictly: an unknown key fails naming the closest valid
// key; a wrong type or range names the path and what was expected.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "coat/models/model_config.h"
#include "coat/models/precision_recipe.h"
#include "coat/ops/quantized_moment.h"

namespace coat::train {

struct DataConfig {
  std::string path;               ///< token file
  std::string format = "coat";    ///< coat (our header) | u16 | u32 (headerless arrays)
  std::string tokenizer;          ///< SentencePiece model used to decode samples (optional)
  int64_t seq_len = 0;
  double validation_fraction = 0.05;
  uint64_t seed = 1234;           ///< the sampler's permutation seed
};

struct LoopConfig {
  std::string device = "cpu";     ///< cpu | cuda
  int64_t micro_batch_size = 1;   ///< sequences per forward/backward
  int64_t global_batch_size = 1;  ///< sequences per optimizer step (a multiple of micro_batch_size)
  int64_t max_steps = 1;
  uint64_t seed = 42;             ///< parameter initialisation
  int64_t eval_interval = 0;      ///< 0: only at the end
  int64_t eval_batches = 4;       ///< micro-batches of validation windows per evaluation (0: the whole split)
  int64_t log_interval = 1;
  std::string on_nonfinite = "stop";  ///< stop | skip: what a non-finite loss or gradient does
  std::string init_from;          ///< checkpoint (or run) directory whose weights start the run (e.g. an HF import)
  /// none | blocks: activation recomputation. blocks keeps only each block's input for the backward and
  /// runs the block again there (about one more forward of the blocks per step, far less activation memory).
  std::string recompute = "none";
};

struct OptimConfig {
  double lr = 3e-4;
  std::string schedule = "cosine";  ///< constant | linear | cosine
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.1;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0.1;
  double clip_grad_norm = 1.0;    ///< 0: off
  bool decay_embeddings = false;
  bool decay_norms = false;
  /// Storage of AdamW's moments: fp32 | bf16 | fp8 (per-group absmax scale) | fp8_expand (COAT's dynamic
  /// range expansion). state_dtype sets both; exp_avg_dtype / exp_avg_sq_dtype override one moment. In the
  /// config each may also be "auto" (state_dtype's default): the recipe's storage (default_state_dtype);
  /// parse_train_config resolves it, so a parsed config (and its resolved document) holds concrete values.
  std::string state_dtype = "fp32";
  std::string exp_avg_dtype;             ///< "" : state_dtype
  std::string exp_avg_sq_dtype;          ///< "" : state_dtype
  std::string exp_avg_fp8 = "e4m3";      ///< e4m3 | e5m2: the FP8 format of m (fp8, fp8_expand)
  std::string exp_avg_sq_fp8 = "e4m3";   ///< e4m3 | e5m2: the FP8 format of v
  int64_t state_group_size = 128;        ///< contiguous elements per scale group (fp8, fp8_expand)
  /// Apply the update to each unit (a block, the head, the embedding) as soon as the backward has completed
  /// its gradients, so that every block's gradient can live in one shared buffer (the gradient memory of
  /// one block instead of the whole model). The same update as after the backward, bit for bit; it needs
  /// one micro-batch per step (train.global_batch_size == train.micro_batch_size) and no clipping
  /// (clip_grad_norm = 0: the global norm is known only when the last unit is done).
  bool apply_in_backward = false;
};

struct PrecisionConfig {
  std::string recipe = "fp32";    ///< fp32 (CPU reference) | bf16 | fp8 | fp8_block | coat
  /// Blocks kept in BF16 under the FP8 recipes (models/precision_recipe.h), as written in the config: block
  /// indices, negative ones counting from the end (-1 is the last block). Checked against the model's
  /// num_hidden_layers when the config is parsed.
  std::vector<int64_t> bf16_layers;
};

struct CheckpointConfig {
  int64_t interval = 0;           ///< steps between checkpoints; 0: only at the end
  int64_t keep_last = 2;          ///< 0: keep all
};

struct LoggingConfig {
  std::string run_dir;            ///< default: runs/<config file name>
  std::string progress = "auto";  ///< auto (on a terminal) | on | off
};

struct TrainConfig {
  models::ModelConfig model;
  DataConfig data;
  LoopConfig train;
  OptimConfig optim;
  PrecisionConfig precision;
  CheckpointConfig checkpoint;
  LoggingConfig logging;
  nlohmann::json resolved;        ///< the document after overrides and defaults (written into the run dir)

  int64_t accumulation_steps() const { return train.global_batch_size / train.micro_batch_size; }
  int64_t tokens_per_step() const { return train.global_batch_size * data.seq_len; }
};

/// Parses and validates a document (after overrides). `source` names it in messages.
TrainConfig parse_train_config(const nlohmann::json& document, const std::string& source);

/// The AdamW state storage that optim.state_dtype = "auto" means under precision.recipe `recipe`: fp8_expand
/// (COAT's FP8 states with dynamic range expansion) under coat, fp32 otherwise.
std::string default_state_dtype(const std::string& recipe);

/// The config's precision recipe for its model (models::make_recipe with model.num_hidden_layers): which
/// blocks run FP8 linears and compress their saved activations.
models::PrecisionRecipe recipe_of(const TrainConfig& config);

/// The storage of AdamW's first / second moment that optim.* asks for (exp_avg_dtype or state_dtype, the FP8
/// format, the group size).
ops::MomentSpec exp_avg_spec(const OptimConfig& o);
ops::MomentSpec exp_avg_sq_spec(const OptimConfig& o);
/// Reads a JSON file, applies "section.key=value" overrides, parses. Errors name the file.
TrainConfig load_train_config(const std::filesystem::path& path, const std::vector<std::string>& overrides);

}  // namespace coat::train
