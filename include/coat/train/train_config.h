// The training configuration: one JSON document, one section per concern (model, data, train, optim,
// precision, dist, checkpoint, logging), read strictly: an unknown key fails naming the closest valid
// key; a wrong type or range names the path and what was expected. Every choice is parsed once into an
// enum; its to_string is the config's spelling (what the resolved document holds).
#pragma once

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "coat/core/device.h"
#include "coat/core/dtype.h"
#include "coat/io/parallel_io.h"
#include "coat/models/model_config.h"
#include "coat/models/precision_recipe.h"
#include "coat/models/recompute.h"
#include "coat/ops/quantized_moment.h"
#include "coat/optim/lr_schedule.h"

namespace coat::train {

/// data.format: how the token file is laid out.
enum class DataFormat {
  Coat,  ///< "coat": our header (data/token_file.h)
  U16,   ///< "u16": a headerless array of 16-bit tokens
  U32,   ///< "u32": a headerless array of 32-bit tokens
};
std::string_view to_string(DataFormat format);

/// train.on_nonfinite: what a non-finite loss or gradient does.
enum class NonfinitePolicy {
  Stop,  ///< "stop": the run ends with an error
  Skip,  ///< "skip": the step is skipped with a warning
};
std::string_view to_string(NonfinitePolicy policy);

/// logging.progress: the progress line on stderr.
enum class ProgressDisplay {
  Auto,  ///< "auto": when stderr is a terminal
  On,    ///< "on"
  Off,   ///< "off"
};
std::string_view to_string(ProgressDisplay progress);

/// dist.reduce_dtype: the dtype gradients are reduced in across ranks.
enum class ReduceDType {
  FP32,  ///< "fp32"
  BF16,  ///< "bf16"
};
std::string_view to_string(ReduceDType dtype);

/// optim.state_dtype / exp_avg_dtype / exp_avg_sq_dtype spell a moment's storage fp32 | bf16 | fp8 |
/// fp8_expand (ops::moment_spec_str has its own spelling for messages).
std::string_view state_dtype_name(ops::MomentEncoding encoding);
/// The inverse of state_dtype_name (a checkpoint's spelling; "auto" is resolved by the parser, not here);
/// throws ConfigError listing the valid names.
ops::MomentEncoding parse_state_dtype(std::string_view name);
/// "e4m3" | "e5m2" (optim.exp_avg_fp8 / exp_avg_sq_fp8) -> the DType; throws ConfigError otherwise.
DType parse_moment_fp8(std::string_view name);

struct DataConfig {
  std::string path;               ///< token file
  DataFormat format = DataFormat::Coat;
  std::string tokenizer;          ///< SentencePiece model used to decode samples (optional)
  /// Loss-mask file of the token file (data/loss_mask_file.h; optional, "" = every target counts): only the
  /// targets whose entry is 1 count in the training and validation loss (supervised fine-tuning).
  std::string loss_mask;
  int64_t seq_len = 0;
  double validation_fraction = 0.05;
  uint64_t seed = 1234;           ///< the sampler's permutation seed

  nlohmann::json to_json() const;
};

struct LoopConfig {
  DeviceKind device = DeviceKind::CPU;  ///< cpu | cuda
  int64_t micro_batch_size = 1;   ///< sequences per forward/backward
  int64_t global_batch_size = 1;  ///< sequences per optimizer step (a multiple of micro_batch_size)
  int64_t max_steps = 1;
  uint64_t seed = 42;             ///< parameter initialisation
  int64_t eval_interval = 0;      ///< 0: only at the end
  int64_t eval_batches = 4;       ///< micro-batches of validation windows per evaluation (0: the whole split)
  int64_t log_interval = 1;
  NonfinitePolicy on_nonfinite = NonfinitePolicy::Stop;
  std::string init_from;          ///< checkpoint (or run) directory whose weights start the run (e.g. an HF import)
  /// none | qkv | blocks: activation recomputation. qkv keeps no q, k and v: each block's backward makes them
  /// again from the input its q/k/v projection keeps (one more GEMM and RoPE per block, the same bytes; not
  /// under fp8_block). blocks keeps only each block's input for the backward and runs the block again there
  /// (about one more forward of the blocks per step, far less activation memory).
  models::Recompute recompute = models::Recompute::None;
  /// Deterministic kernels where the fast ones vary from run to run (cuDNN's attention backward, whose default
  /// adds dq with atomics): a resumed GPU run then continues with the bits of the uninterrupted one (an
  /// 8-layer Llama-2-7B shape resumed at step 50 on an H200: losses and the 11.6 GB rank file identical). Cost
  /// measured on that shape: 1.0% of tokens/s (53,896 against 54,420), the same memory at the end of a step.
  /// false: the faster backward; a GPU resume then agrees to rounding, not bit for bit. The CPU backend is
  /// deterministic either way.
  bool deterministic = true;

  /// The device this loop trains on (index 0: one device per process).
  Device compute_device() const { return Device{device, 0}; }
  nlohmann::json to_json() const;
};

struct OptimConfig {
  double lr = 3e-4;
  optim::LrSchedule::Kind schedule = optim::LrSchedule::Cosine;  ///< constant | linear | cosine
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
  /// Spelled as state_dtype_name.
  ops::MomentEncoding state_dtype = ops::MomentEncoding::F32;
  std::optional<ops::MomentEncoding> exp_avg_dtype;     ///< none: state_dtype (the parser always sets it)
  std::optional<ops::MomentEncoding> exp_avg_sq_dtype;  ///< none: state_dtype (the parser always sets it)
  DType exp_avg_fp8 = DType::E4M3;       ///< e4m3 | e5m2: the FP8 format of m (fp8, fp8_expand)
  DType exp_avg_sq_fp8 = DType::E4M3;    ///< e4m3 | e5m2: the FP8 format of v
  int64_t state_group_size = 128;        ///< contiguous elements per scale group (fp8, fp8_expand)
  /// Apply the update to each unit (a block, the head, the embedding) as soon as the backward has completed
  /// its gradients, so that every block's gradient can live in one shared buffer (the gradient memory of
  /// one block instead of the whole model). The same update as after the backward, bit for bit; it needs
  /// one micro-batch per step (train.global_batch_size == train.micro_batch_size) and no clipping
  /// (clip_grad_norm = 0: the global norm is known only when the last unit is done).
  bool apply_in_backward = false;

  /// The storage of m / v: exp_avg_dtype / exp_avg_sq_dtype, else state_dtype.
  ops::MomentEncoding exp_avg_encoding() const { return exp_avg_dtype.value_or(state_dtype); }
  ops::MomentEncoding exp_avg_sq_encoding() const { return exp_avg_sq_dtype.value_or(state_dtype); }
  nlohmann::json to_json() const;
};

struct PrecisionConfig {
  /// fp32 (the CPU reference) | bf16 | fp8 | fp8_block | coat
  models::RecipeKind recipe = models::RecipeKind::FP32;
  /// Blocks kept in BF16 under the FP8 recipes (models/precision_recipe.h), as written in the config: block
  /// indices, negative ones counting from the end (-1 is the last block). Checked against the model's
  /// num_hidden_layers when the config is parsed.
  std::vector<int64_t> bf16_layers;
  /// Attention's saved q, k, v and output as FP8 E4M3 1x16 groups (models/precision_recipe.h), any recipe.
  bool compress_attention = false;
  /// fp8 and coat: keep the E4M3 codes of each weight's transpose (dgrad's operand) beside W's from one
  /// optimizer step to the next (true), or make them in the backward from W's, one linear at a time (false:
  /// 1 byte per FP8 weight less, e.g. 6.0 GiB on Llama-2-7B, for one transpose copy per linear and step).
  bool cache_weight_transpose = true;

  /// Every recipe but fp32 computes in BF16 (weights' compute copies and activations; FP32 masters).
  bool computes_in_bf16() const { return recipe != models::RecipeKind::FP32; }
  nlohmann::json to_json() const;
};

/// Data-parallel training over the ranks of an MPI job (FSDP-style sharding of the flat units, dist/fsdp.h).
struct DistConfig {
  /// Ranks in the job; 0: the size mpirun starts. A run under mpirun sets it (a different value is an error);
  /// a --dry-run plans for this many.
  int64_t world_size = 0;
  /// Ranks each unit is sharded over (groups of shard_size ranks replicate each other's shards); 0: the
  /// whole world. Divides world_size when both are known.
  int64_t shard_size = 0;
  /// Free a unit's gathered weights after its forward and gather them again for the backward (less memory,
  /// one more all-gather per unit and step); false keeps them from the forward to the backward.
  bool reshard_after_forward = true;
  /// Units whose all-gather is issued ahead of the one computing (>= 0; 0: each gathered when needed).
  int64_t prefetch = 0;
  /// The dtype of the gradient reduce-scatter.
  ReduceDType reduce_dtype = ReduceDType::FP32;
  /// Seconds a collective may wait before NCCL's watchdog aborts the job (> 0).
  double timeout_s = 600.0;
  /// Under the fp8, coat and fp8_block recipes, gather the units whose linears all run FP8 as E4M3 codes
  /// quantised by their owners from the FP32 masters (half the bytes of BF16, and the copies one process
  /// makes) instead of their BF16 values (dist/fp8_gather.h).
  bool fp8_all_gather = true;

  nlohmann::json to_json() const;
};

struct CheckpointConfig {
  int64_t interval = 0;           ///< steps between checkpoints; 0: only at the end
  int64_t keep_last = 2;          ///< 0: keep all
  /// Save while training goes on (train/async_saver.h): training waits only for a copy of this rank's masters
  /// and optimizer states into host memory (pinned under CUDA; it doubles the host memory they take), a
  /// background thread writes it. false: training waits for the whole write.
  bool async = true;
  /// Threads that checksum and write a rank file, and verify and copy it at a resume (io/parallel_io.h);
  /// 1: one tensor after another. Default min(8, max(1, hardware threads / 2)).
  int io_threads = io::default_io_threads();

  nlohmann::json to_json() const;
};

struct LoggingConfig {
  std::string run_dir;            ///< default: runs/<config file name>
  ProgressDisplay progress = ProgressDisplay::Auto;

  nlohmann::json to_json() const;
};

struct TrainConfig {
  models::ModelConfig model;
  DataConfig data;
  LoopConfig train;
  OptimConfig optim;
  PrecisionConfig precision;
  DistConfig dist;
  CheckpointConfig checkpoint;
  LoggingConfig logging;
  /// The document after overrides and defaults (written into the run dir and checkpoints): to_json() of
  /// the parsed config, which parses again to the same document.
  nlohmann::json resolved;

  /// The ranks the global batch is split over (dist.world_size, 1 when unset).
  int64_t ranks() const { return std::max<int64_t>(1, dist.world_size); }
  /// Micro-batches each rank runs per optimizer step.
  int64_t accumulation_steps() const { return train.global_batch_size / (train.micro_batch_size * ranks()); }
  int64_t tokens_per_step() const { return train.global_batch_size * data.seq_len; }
  /// Every section's to_json, under the section's name.
  nlohmann::json to_json() const;
};

/// Parses and validates a document (after overrides). `source` names it in messages.
/// ConfigError unless train.global_batch_size splits into whole micro-batches on each of `ranks` ranks.
void check_batch_split(const LoopConfig& train, int64_t ranks);

/// `launched_world`: the ranks mpirun started for a run (dist.world_size is set to it, and may not say
/// otherwise); 0 for a config read without running it (--dry-run plans for dist.world_size).
TrainConfig parse_train_config(const nlohmann::json& document, const std::string& source, int launched_world = 0);

/// The AdamW state storage that optim.state_dtype = "auto" means under precision.recipe `recipe`: fp8_expand
/// (COAT's FP8 states with dynamic range expansion) under coat, fp32 otherwise.
ops::MomentEncoding default_state_dtype(models::RecipeKind recipe);

/// The config's precision recipe for its model (models::make_recipe with model.num_hidden_layers): which
/// blocks run FP8 linears and compress their saved activations.
models::PrecisionRecipe recipe_of(const TrainConfig& config);

/// The storage of AdamW's first / second moment that optim.* asks for (exp_avg_dtype or state_dtype, the FP8
/// format, the group size).
ops::MomentSpec exp_avg_spec(const OptimConfig& o);
/// Elements a sharded unit's slices are a multiple of: the least common multiple of the state group and 128 (a
/// kernel tile), so that no optimizer state group straddles two ranks and checkpoints re-slice by unit offset.
int64_t shard_alignment(const OptimConfig& o);
ops::MomentSpec exp_avg_sq_spec(const OptimConfig& o);
/// A document without a "model" section whose train.init_from names a checkpoint (or a run directory) gets
/// that checkpoint's model section (its meta.json config.model): a fine-tuning config need not repeat the
/// imported model's shape. ConfigError naming `source` and init_from where it cannot be read.
void model_from_init_checkpoint(nlohmann::json& document, const std::string& source);
/// Parses JSON text (comments allowed), applies "section.key=value" overrides, takes the model from
/// train.init_from where the document has none (model_from_init_checkpoint), parses the document.
/// ConfigError naming `source` for every refusal (invalid JSON with its position included).
TrainConfig parse_train_config_text(std::string_view text, const std::vector<std::string>& overrides,
                                    const std::string& source, int launched_world = 0);
/// Reads a JSON file, applies "section.key=value" overrides, parses. Errors name the file.
TrainConfig load_train_config(const std::filesystem::path& path, const std::vector<std::string>& overrides,
                              int launched_world = 0);

}  // namespace coat::train
