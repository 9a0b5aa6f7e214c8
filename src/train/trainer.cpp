// The Trainer's setup (data, model, optimizer, run directory), its steps and evaluation, and the run loop;
// its checkpoint side (saves, snapshots, loading a checkpoint) is in trainer_checkpoint.cpp.
#include "coat/train/trainer.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>

#include "coat/core/nvtx.h"
#include "coat/io/atomic_file.h"
#include "coat/io/checkpoint.h"
#include "coat/io/checkpoint_reader.h"
#include "coat/models/memory_plan.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/elementwise.h"
#include "coat/ops/loss.h"
#include "coat/ops/reduce.h"
#include "coat/optim/adamw.h"
#include "coat/ops/runtime.h"
#include "coat/train/memory_advice.h"
#include "coat/train/checkpoint_save.h"
#include "coat/train/model_loader.h"
#include "coat/train/unit_state.h"

namespace coat::train {

namespace {

data::TokenFile open_tokens(const DataConfig& d, int64_t vocab) {
  data::TokenFile f = d.format == DataFormat::Coat
                          ? data::TokenFile::open(d.path)
                          : data::TokenFile::open_raw(d.path,
                                                      d.format == DataFormat::U16 ? data::TokenWidth::U16
                                                                                  : data::TokenWidth::U32,
                                                      static_cast<uint32_t>(vocab));
  if (f.vocab_size() > static_cast<uint64_t>(vocab)) {
    throw ConfigError(detail::concat("token file '", d.path, "' was made with a vocabulary of ", f.vocab_size(),
                                     " tokens but model.vocab_size is ", vocab));
  }
  // Every token id must index the embedding table: check the whole file once, up front (the error names the
  // file, the position and the id).
  f.validate(static_cast<uint32_t>(vocab));
  return f;
}

std::optional<data::LossMaskFile> open_loss_mask(const DataConfig& d, const data::TokenFile& tokens) {
  if (d.loss_mask.empty()) return std::nullopt;
  try {
    return data::LossMaskFile::open_for(d.loss_mask, tokens);
  } catch (const IoError& e) {
    throw ConfigError(detail::concat("config: 'data.loss_mask': ", e.what()));
  }
}

void refuse_previous_run(const std::filesystem::path& dir) {
  if (!std::filesystem::exists(dir / "metrics.jsonl") && !std::filesystem::exists(dir / "checkpoints")) return;
  throw ConfigError(detail::concat("run directory '", dir.string(),
                                   "' already holds a run (metrics.jsonl or checkpoints); pass --resume auto to "
                                   "continue it, or set logging.run_dir to a new directory"));
}

optim::LrSchedule make_schedule(const TrainConfig& c) {
  optim::LrSchedule s;
  s.kind = c.optim.schedule;
  s.peak_lr = static_cast<float>(c.optim.lr);
  s.warmup_steps = c.optim.warmup_steps;
  s.total_steps = c.train.max_steps;
  s.min_lr_ratio = static_cast<float>(c.optim.min_lr_ratio);
  return s;
}

}  // namespace

Trainer::Trainer(TrainConfig config, ContextPtr context, bool resuming, TrainerComms comms)
    : config_(std::move(config)),
      context_(std::move(context)),
      comms_(comms),
      rank_(comms.world ? comms.world->rank() : 0),
      world_(comms.world ? comms.world->world_size() : 1),
      shard_world_(comms.shard ? comms.shard->world_size() : 1),
      run_dir_(config_.logging.run_dir),
      tokens_(open_tokens(config_.data, config_.model.vocab_size)),
      loss_mask_(open_loss_mask(config_.data, tokens_)),
      resuming_(resuming) {
  check_setup(resuming);
  context_->set_deterministic(config_.train.deterministic);
  sampler_ = std::make_unique<data::WindowSampler>(tokens_.size(), static_cast<uint64_t>(config_.data.seq_len),
                                                   config_.data.seed, config_.data.validation_fraction);
  if (sampler_->train_windows() == 0) {
    throw ConfigError(detail::concat("token file '", config_.data.path, "' holds ", tokens_.size(),
                                     " tokens: too few for one training window of data.seq_len = ", config_.data.seq_len));
  }
  if (loss_mask_ && rank_ == 0) {
    spdlog::info("data.loss_mask {}: {} of {} tokens count in the loss as targets", loss_mask_->path().string(),
                 loss_mask_->counted(), loss_mask_->size());
  }
  build_model();
  init_weights();
  build_optimizer();
  rank_file_writer_ = rank_file_writer(config_.checkpoint.io_threads);
  if (config_.checkpoint.async) {
    // The writer is looked up at each write, so that set_rank_file_writer applies to the saves that follow.
    saver_ = std::make_unique<AsyncSaver>(
        run_dir_, comms_.world, context_, ops::host_staging_context(context_),
        static_cast<int>(config_.checkpoint.keep_last),
        [this](const std::filesystem::path& staging, int file,
               const std::vector<std::pair<std::string, Tensor>>& tensors, const std::filesystem::path& recycle) {
          return rank_file_writer_(staging, file, tensors, recycle);
        });
  }
}

void Trainer::check_setup(bool resuming) const {
  if (!resuming) {
    // Rank 0's look at the run directory is every rank's (collective): the other ranks must not look later,
    // when rank 0 may have begun the run there already.
    std::string refused;
    if (rank_ == 0) {
      try {
        refuse_previous_run(run_dir_);
      } catch (const ConfigError& e) {
        refused = e.what();
      }
    }
    if (max_over_ranks(refused.empty() ? 0 : 1) != 0) {
      throw ConfigError(!refused.empty() ? refused
                                         : detail::concat("run directory '", run_dir_.string(),
                                                          "' already holds a run (found by rank 0); pass --resume "
                                                          "auto to continue it, or set logging.run_dir to a new one"));
    }
  }
  if (config_.precision.recipe == models::RecipeKind::FP32 && context_->device().is_cuda()) {
    throw ConfigError("config: 'precision.recipe' = \"fp32\" is the CPU reference; on CUDA use \"bf16\" (cuDNN's "
                      "fused attention runs in BF16)");
  }
  if (config_.dist.world_size > 0 && config_.dist.world_size != world_) {
    throw ConfigError(detail::concat("config: 'dist.world_size' = ", config_.dist.world_size, " but the trainer runs on ",
                                     world_, " rank", world_ > 1 ? "s" : "", " (leave it unset under mpirun)"));
  }
  // The parser checked the split for dist.world_size; a trainer given its ranks directly checks it here.
  check_batch_split(config_.train, world_);
  if (world_ > 1) check_dist_keys();
}

void Trainer::check_dist_keys() const {
  const DistConfig& d = config_.dist;
  const int64_t shard = d.shard_size == 0 ? world_ : d.shard_size;
  if (shard != shard_world_ || (shard < world_ && comms_.replicate == nullptr)) {
    throw ConfigError(detail::concat("config: 'dist.shard_size' = ", d.shard_size, " but the trainer was given ",
                                     shard_world_, "-rank shard groups", comms_.replicate ? "" : " and no replica group",
                                     " (coat-train splits the world by dist.shard_size)"));
  }
}

dist::FsdpOptions Trainer::fsdp_options() const {
  dist::FsdpOptions o;
  o.reshard_after_forward = config_.dist.reshard_after_forward;
  if (config_.dist.reduce_dtype == ReduceDType::BF16) o.reduce_dtype = DType::BF16;
  o.prefetch = config_.dist.prefetch;
  const models::RecipeKind recipe = config_.precision.recipe;
  o.fp8_all_gather = config_.dist.fp8_all_gather &&
                     (recipe == models::RecipeKind::FP8 || recipe == models::RecipeKind::FP8Block ||
                      recipe == models::RecipeKind::Coat);
  if (recipe == models::RecipeKind::FP8Block) o.fp8_scaling = dist::Fp8WeightScaling::Block128x128;
  return o;
}

void Trainer::build_model() {
  // bf16, fp8, coat: BF16 compute weights and activations, FP32 master weights and gradients (the FP8 recipes
  // add FP8 GEMMs and, under coat, compressed saved activations: models/precision_recipe.h).
  const std::optional<DType> compute =
      config_.precision.computes_in_bf16() ? std::optional<DType>(DType::BF16) : std::nullopt;
  models::TransformerOptions options;
  options.recipe = recipe_of(config_);
  if (world_ > 1) {
    // Shard boundaries on optimizer state groups: each rank's groups are those of one process.
    options.shard = models::ShardSpec{comms_.shard->rank(), shard_world_, shard_alignment(config_.optim)};
  } else {
    options.share_block_grads = config_.optim.apply_in_backward;
  }
  model_ = std::make_unique<models::Transformer>(config_.model, context_, DType::F32, /*with_grads=*/true, compute,
                                                 options);
  model_->set_recompute(config_.train.recompute);
  if (world_ > 1) {
    fsdp_ = std::make_unique<dist::FsdpUnits>(model_->store(), *comms_.shard,
                                              fsdp_options(), comms_.replicate);
    model_->set_unit_hooks(fsdp_.get());
  }
}

void Trainer::init_weights() {
  model_->init(config_.train.seed);
  if (config_.train.init_from.empty()) return;
  // Only the ranges this rank holds are read: a sharded run never holds the whole source model on one rank.
  const io::CheckpointReader source = io::CheckpointReader::open(
      resolve_checkpoint_dir(config_.train.init_from), config_.checkpoint.io_threads);
  const nlohmann::json& meta = source.meta();
  if (!meta.contains("config") || !meta["config"].contains("model")) {
    throw IoError(detail::concat("train.init_from '", config_.train.init_from, "': ", source.dir().string(),
                                 "/meta.json has no config.model"));
  }
  const models::ModelConfig source_model = models::ModelConfig::from_config(ConfigSection(meta["config"]["model"], "model"));
  if (source_model != config_.model) {
    throw ConfigError(detail::concat("train.init_from '", config_.train.init_from, "' holds another model: ",
                                     source_model.to_json().dump(), "; this config has ", config_.model.to_json().dump()));
  }
  load_masters(model_->store(), source);
  model_->sync_compute_weights();
  spdlog::info("initialised weights from {}", source.dir().string());
}

void Trainer::build_optimizer() {
  // One optimizer buffer per flat unit (or this rank's slice of it): one fused update per unit and step.
  const auto decays = [this](const std::string& name) {
    return optim::default_decay(name, config_.optim.decay_embeddings, config_.optim.decay_norms);
  };
  optim::AdamWConfig oc;
  oc.beta1 = static_cast<float>(config_.optim.beta1);
  oc.beta2 = static_cast<float>(config_.optim.beta2);
  oc.eps = static_cast<float>(config_.optim.eps);
  oc.weight_decay = static_cast<float>(config_.optim.weight_decay);
  oc.clip_grad_norm = static_cast<float>(config_.optim.clip_grad_norm);
  oc.exp_avg = exp_avg_spec(config_.optim);
  oc.exp_avg_sq = exp_avg_sq_spec(config_.optim);
  optimizer_ = std::make_unique<optim::AdamW>(unit_buffers(model_->store(), decays), oc);
  if (world_ > 1) {
    // The norm, the clipping and the skip decision over every rank's slices: one all-reduce per step.
    // (Over one shard group: the replicas hold the same summed slices.)
    optimizer_->set_sum_reduction([this](Tensor& sum) { comms_.shard->all_reduce(sum, dist::ReduceOp::Sum).wait(); });
  }
  step_policy_ = make_step_policy(config_.optim.apply_in_backward, model_->store(), *optimizer_);
  step_hooks_ = std::make_unique<models::UnitHookChain>(
      fsdp_ ? std::vector<models::UnitHooks*>{fsdp_.get(), step_policy_.get()}
            : std::vector<models::UnitHooks*>{step_policy_.get()});
  schedule_ = make_schedule(config_);
}

void Trainer::on_rank0_collectively(const std::string& what, const std::function<void()>& work) {
  std::exception_ptr failure;
  if (rank_ == 0) {
    try {
      work();
    } catch (...) {
      failure = std::current_exception();
    }
  }
  if (max_over_ranks(failure ? 1 : 0) == 0) return;
  if (failure) std::rethrow_exception(failure);
  throw IoError(detail::concat("rank 0 could not ", what, " (its error names the cause)"));
}

int64_t Trainer::max_over_ranks(int64_t value) const {
  if (!comms_.world || world_ == 1) return value;
  Tensor t = ops::from_vector(context_, {1}, DType::I64, std::vector<double>{static_cast<double>(value)});
  comms_.world->all_reduce(t, dist::ReduceOp::Max).wait();
  return static_cast<int64_t>(ops::to_double_vector(t).at(0));
}

void Trainer::take_run_dir_lock() {
  if (run_dir_lock_.held()) return;
  try {
    run_dir_lock_ = io::DirectoryLock::acquire(run_dir_);
  } catch (const io::DirectoryLocked& e) {
    throw io::DirectoryLocked(detail::concat("run directory ", e.what(), ": another coat-train writes it; wait for it "
                                             "to end, or set logging.run_dir to another directory"),
                              e.holder());
  }
}

void Trainer::lock_run_dir() {
  on_rank0_collectively(detail::concat("lock the run directory '", run_dir_.string(), "'"), [this] {
    if (std::filesystem::is_directory(run_dir_)) take_run_dir_lock();
  });
}

void Trainer::open_run_dir() {
  if (run_dir_open_) return;
  // Every rank has checked the config, the data and any checkpoint it resumed from before rank 0 writes.
  on_rank0_collectively(detail::concat("open the run directory '", run_dir_.string(), "'"),
                        [this] { write_run_dir_files(); });
  run_dir_open_ = true;
}

void Trainer::write_run_dir_files() {
  std::error_code ec;
  std::filesystem::create_directories(run_dir_, ec);
  if (ec) throw IoError(detail::concat("cannot create run directory '", run_dir_.string(), "': ", ec.message()));
  take_run_dir_lock();
  // Another run may have started and ended since check_setup looked: look again, under the lock.
  if (!resuming_) refuse_previous_run(run_dir_);
  for (const std::filesystem::path& p : io::remove_stale_temporaries(run_dir_ / "config.json"))
    spdlog::warn("removed {}: left by an interrupted run (killed while writing config.json)", p.string());
  io::write_string_atomically(run_dir_ / "config.json", config_.resolved.dump(2) + "\n");
}

void Trainer::write_metrics(const nlohmann::json& record) {
  if (rank_ != 0) return;
  if (!metrics_) {
    // Opened with the first record: a run that fails before its first step leaves no metrics.jsonl, so
    // that starting it again is not refused as "already holds a run".
    const bool tty = isatty(STDERR_FILENO) != 0;
    const bool progress = config_.logging.progress == ProgressDisplay::On ||
                          (config_.logging.progress == ProgressDisplay::Auto && tty);
    metrics_ = std::make_unique<MetricsLogger>(run_dir_ / "metrics.jsonl", progress);
  }
  metrics_->write(record);
}

void Trainer::load_batch(const std::vector<uint64_t>& windows, Tensor& ids, Tensor& targets) const {
  const int64_t seq = config_.data.seq_len;
  const int64_t rows = static_cast<int64_t>(windows.size());
  std::vector<int32_t> window(static_cast<size_t>(seq + 1)), row_targets(static_cast<size_t>(seq));
  std::vector<double> id_values(static_cast<size_t>(rows * seq)), target_values(static_cast<size_t>(rows * seq));
  for (int64_t r = 0; r < rows; ++r) {
    const uint64_t start = sampler_->window_start(windows[static_cast<size_t>(r)]);
    tokens_.read(start, window, static_cast<uint32_t>(config_.model.vocab_size));
    std::copy(window.begin() + 1, window.end(), row_targets.begin());
    // The targets the loss mask leaves out become ignore_index (the loss's -1): no loss, no gradient.
    if (loss_mask_) loss_mask_->mask_targets(start + 1, row_targets, /*ignore_index=*/-1);
    for (int64_t t = 0; t < seq; ++t) {
      id_values[static_cast<size_t>(r * seq + t)] = window[static_cast<size_t>(t)];
      target_values[static_cast<size_t>(r * seq + t)] = row_targets[static_cast<size_t>(t)];
    }
  }
  ids = ops::from_vector(context_, {rows, seq}, DType::I32, id_values);
  targets = ops::from_vector(context_, {rows, seq}, DType::I32, target_values);
}

StepRecord Trainer::train_step() {
  try {
    return run_step();
  } catch (const OutOfMemory& e) {
    // What this config was planned to take and what would fit, beside what the allocator reported.
    const Device dev = context_->device();
    const size_t device_bytes = dev.is_cuda() ? ops::cuda_device_memory_bytes(dev.index) : 0;
    spdlog::error("step {} ran out of memory on {}\n{}", step_ + 1, dev.str(), describe_memory_plan(config_, device_bytes));
    throw OutOfMemory(detail::concat("step ", step_ + 1, " (micro-batch ", config_.train.micro_batch_size, " x ",
                                     config_.data.seq_len,
                                     " tokens, train.recompute = ", models::to_string(config_.train.recompute),
                                     ") ran out of memory on ", dev.str(),
                                     " (the memory plan and what would fit are logged above): ", e.what()));
  }
}

StepRecord Trainer::run_step() {
  const NvtxRange step_range("step");
  StepRecord rec;
  rec.step = step_ + 1;
  rec.lr = schedule_.lr_at(rec.step);
  // The one global sampler draws the whole global batch on every rank (its state stays global); each rank
  // trains on its own consecutive slice of it.
  const std::vector<uint64_t> windows = sampler_->next(static_cast<uint64_t>(config_.train.global_batch_size));
  // The loss is the mean over the global batch's counted targets, which every rank counts alike from the
  // whole window list (no collective).
  const int64_t loss_tokens = counted_targets(windows);
  if (loss_tokens == 0) return skip_step_without_targets(rec);
  const double grad_scale = 1.0 / static_cast<double>(loss_tokens);
  const int64_t micro = config_.train.micro_batch_size;
  const int64_t per_rank = config_.train.global_batch_size / world_;
  // {loss sum, tokens, bad targets} of the micro-batches, added on the device and read once, after the last
  // backward: every backward runs, and a non-finite loss skips the step at the end (under apply_in_backward
  // the policy's device flag already kept its updates from running).
  Tensor totals = ops::zeros(context_, {3}, DType::F64, MemoryCategory::Other);
  step_policy_->begin(static_cast<float>(rec.lr));
  model_->set_unit_hooks(step_hooks_.get());
  try {
    for (int64_t first = rank_ * per_rank; first < (rank_ + 1) * per_rank; first += micro) {
      Tensor ids, targets;
      load_batch({windows.begin() + first, windows.begin() + first + micro}, ids, targets);
      autograd::Tape tape;
      nn::LossOutput out;
      {
        const PhaseTimer::Scope phase(phase_timer_, Phase::Forward);
        out = model_->forward(tape, ids, targets, /*ignore_index=*/-1, grad_scale);
      }
      ops::add_(totals, out.result.totals());
      if (world_ > 1 && config_.optim.apply_in_backward) {
        // The updates in this backward stop on every rank when any rank's loss is not finite.
        Tensor global_loss = ops::clone(out.loss_sum);
        comms_.world->all_reduce(global_loss, dist::ReduceOp::Sum).wait();
        step_policy_->loss_ready(global_loss);
      } else {
        step_policy_->loss_ready(out.loss_sum);
      }
      const PhaseTimer::Scope phase(phase_timer_, Phase::Backward);
      tape.backward(out.root, nn::loss_seed());
    }
  } catch (...) {
    model_->set_unit_hooks(fsdp_.get());
    step_policy_->abandon();
    throw;
  }
  model_->set_unit_hooks(fsdp_.get());
  // The global batch's totals: one all-reduce per step (sharded), then one read.
  if (world_ > 1) comms_.world->all_reduce(totals, dist::ReduceOp::Sum).wait();
  ops::CrossEntropyValues sums;
  try {
    sums = ops::read_totals(totals, config_.model.vocab_size, /*ignore_index=*/-1);
  } catch (...) {
    step_policy_->abandon();
    throw;
  }
  rec.loss = sums.loss_sum / static_cast<double>(sums.count);
  rec.loss_tokens = sums.count;
  StepOutcome outcome;
  {
    const PhaseTimer::Scope phase(phase_timer_, Phase::Optimizer);
    // A sum is non-finite exactly when some micro-batch's loss was (inf + x stays inf or becomes NaN).
    outcome = step_policy_->end(std::isfinite(sums.loss_sum) && std::isfinite(rec.loss));
  }
  return finish_step(rec, outcome);
}

StepRecord Trainer::finish_step(StepRecord rec, const StepOutcome& outcome) {
  rec.grad_norm = outcome.stats.grad_norm;
  const bool loss_finite = outcome.loss_finite;
  rec.skipped = !loss_finite || outcome.stats.skipped;
  if (rec.skipped) {
    const std::string what = detail::concat("non-finite ", loss_finite ? "gradient" : "loss", " at step ", rec.step,
                                            " (loss ", rec.loss, ", grad norm ", rec.grad_norm,
                                            "); first non-finite tensor: ",
                                            outcome.culprit.empty() ? "?" : outcome.culprit);
    if (config_.train.on_nonfinite == NonfinitePolicy::Stop) {
      throw Error(what + ". " + outcome.updated + "; lower optim.lr or resume from the last checkpoint.");
    }
    spdlog::warn("{}; step skipped (train.on_nonfinite = skip)", what);
  }
  return record_step(rec);
}

StepRecord Trainer::record_step(const StepRecord& rec) {
  step_ = rec.step;
  tokens_seen_ += config_.tokens_per_step();
  history_.push_back(rec);
  return rec;
}

int64_t Trainer::counted_targets(const std::vector<uint64_t>& windows) const {
  const int64_t seq = config_.data.seq_len;
  if (!loss_mask_) return static_cast<int64_t>(windows.size()) * seq;
  uint64_t counted = 0;
  for (uint64_t w : windows) counted += loss_mask_->counted_in(sampler_->window_start(w) + 1, static_cast<uint64_t>(seq));
  return static_cast<int64_t>(counted);
}

StepRecord Trainer::skip_step_without_targets(StepRecord rec) {
  // No loss to take the mean of, and an update from zero gradients would still move the weights (weight decay,
  // the moments): the step is skipped, its windows consumed, as a skipped non-finite step is.
  if (rank_ == 0) {
    if (metrics_) metrics_->clear_progress();
    spdlog::warn("step {}: no target of its {} windows counts in the loss (data.loss_mask '{}'); step skipped",
                 rec.step, config_.train.global_batch_size, config_.data.loss_mask);
  }
  rec.loss = std::numeric_limits<double>::quiet_NaN();
  rec.skipped = true;
  return record_step(rec);
}

EvalResult Trainer::evaluate() {
  EvalResult r;
  const uint64_t windows = sampler_->validation_windows();
  if (windows == 0) return r;
  const uint64_t micro = static_cast<uint64_t>(config_.train.micro_batch_size);
  uint64_t limit = config_.train.eval_batches == 0 ? windows : std::min<uint64_t>(windows, micro * static_cast<uint64_t>(config_.train.eval_batches));
  Tensor totals = ops::zeros(context_, {3}, DType::F64, MemoryCategory::Other);  // read once, at the end
  for (uint64_t start = 0; start < limit; start += micro) {
    std::vector<uint64_t> batch;
    // An evenly spread subset of the validation windows when not all of them are used.
    for (uint64_t i = start; i < std::min(limit, start + micro); ++i) batch.push_back(sampler_->validation_window(i * windows / limit));
    Tensor ids, targets;
    load_batch(batch, ids, targets);
    autograd::Tape tape(/*grad_enabled=*/false);
    nn::LossOutput out = model_->forward(tape, ids, targets, -1, 1.0);
    ops::add_(totals, out.result.totals());
  }
  const ops::CrossEntropyValues sums = ops::read_totals(totals, config_.model.vocab_size, -1);
  r.tokens = sums.count;
  // A loss mask may leave no validation target counted: then there is no mean (NaN; null in metrics.jsonl).
  r.loss = r.tokens > 0 ? sums.loss_sum / static_cast<double>(r.tokens) : std::numeric_limits<double>::quiet_NaN();
  r.perplexity = std::exp(r.loss);
  return r;
}

double Trainer::validation_unigram_entropy() const {
  // The frequencies of the predicted tokens (each window's targets) over the whole validation split.
  std::map<uint32_t, uint64_t> counts;
  uint64_t n = 0;
  for (uint64_t k = 0; k < sampler_->validation_windows(); ++k) {
    const uint64_t start = sampler_->window_start(sampler_->validation_window(k));
    for (uint64_t i = start + 1; i <= start + static_cast<uint64_t>(config_.data.seq_len); ++i) {
      if (loss_mask_ && !loss_mask_->counts(i)) continue;
      ++counts[tokens_[i]];
      ++n;
    }
  }
  double h = 0.0;
  for (const auto& [tok, c] : counts) {
    const double p = static_cast<double>(c) / static_cast<double>(n);
    h -= p * std::log(p);
  }
  return h;
}

void Trainer::log_step(const StepRecord& rec, nlohmann::json record, double per_step, bool console) {
  if (console) {
    if (metrics_) metrics_->clear_progress();
    const double tps = record.value("tokens_per_s", 0.0);
    spdlog::info("step {:>6}/{} | loss {:.4f}{} | lr {:.3e} | grad norm {:.3f} | {:.0f} tok/s{} | mem {}", rec.step,
                 config_.train.max_steps, rec.loss,
                 loss_mask_ ? fmt::format(" ({} loss tokens)", rec.loss_tokens) : std::string(), rec.lr, rec.grad_norm, tps,
                 world_ > 1 ? fmt::format(" ({:.0f} per rank)", tps / world_) : std::string(),
                 models::format_bytes(static_cast<double>(context_->allocator().memory_report().total_current_bytes)));
  }
  write_metrics(record);
  if (metrics_) metrics_->progress(rec.step, config_.train.max_steps, rec.loss, per_step);
}

void Trainer::stop_after_write_failure(std::exception_ptr local_error) {
  // Every rank takes part in the save (a sharded run gathers its units); on a full disk it may fail too.
  std::string saved;
  try {
    finish_pending_save();                   // a save of this step may be on its way already
    if (saved_step_ != step_) save_checkpoint();
    saved_step_ = step_;
    saved = detail::concat("; a checkpoint of step ", step_, " was saved");
  } catch (const std::exception& e) {
    saved = detail::concat("; saving a checkpoint of step ", step_, " failed too: ", e.what());
  }
  if (metrics_) metrics_->clear_progress();
  if (!local_error) {
    throw IoError(detail::concat("rank 0 could not write metrics.jsonl of run directory '", run_dir_.string(),
                                 "' (its error names the cause); stopped after step ", step_, saved));
  }
  try {
    std::rethrow_exception(local_error);
  } catch (const std::exception& e) {
    throw IoError(detail::concat(e.what(), "; stopped after step ", step_, saved));
  }
}

RunEnd Trainer::run(int64_t stop_after_step) {
  open_run_dir();
  if (saved_step_ < 0 && step_ > 0) saved_step_ = step_;  // resumed from the checkpoint of step_
  const int64_t last = stop_after_step > 0 ? std::min(stop_after_step, config_.train.max_steps) : config_.train.max_steps;
  const int64_t interval = config_.checkpoint.interval;
  if (step_ < last && (save_due(last) || (interval > 0 && last / interval > step_ / interval))) {
    reserve_snapshot_buffers(last);
  }
  RunEnd end = RunEnd::Finished;
  try {
    end = run_steps(last);
    finish_pending_save();
    if (saver_) saver_->finish_removals();
  } catch (...) {
    settle_pending_save_after_failure();
    if (saver_) saver_->drop_unused_spares();
    throw;
  }
  if (metrics_) metrics_->clear_progress();
  return end;
}

RunEnd Trainer::run_steps(int64_t last) {
  auto started = std::chrono::steady_clock::now();
  auto window_start = started;  // time and step of the last log line
  int64_t window_first_step = step_;
  int64_t steps_run = 0;     // steps run by this call
  int64_t gathered = 0, reduced = 0;  // FSDP's bytes so far (this rank), for the per-step counts
  while (step_ < last) {
    if (fsdp_) {
      gathered = fsdp_->bytes_gathered();
      reduced = fsdp_->bytes_reduced();
    }
    StepRecord rec = train_step();
    ++steps_run;
    const auto now = std::chrono::steady_clock::now();
    const double elapsed = std::chrono::duration<double>(now - started).count();
    const double per_step = elapsed / static_cast<double>(steps_run);
    nlohmann::json j = {{"step", rec.step},         {"loss", rec.loss},        {"lr", rec.lr},
                        {"loss_tokens", rec.loss_tokens}, {"grad_norm", rec.grad_norm},
                        {"skipped", rec.skipped},    {"tokens", tokens_seen_},
                        {"time_s", elapsed},        {"mem_bytes", context_->allocator().memory_report().total_current_bytes}};
    if (startup_) {
      startup_->mark(detail::concat("step ", rec.step));
      j["time_to_first_step_s"] = startup_->elapsed_s();
      spdlog::info("time to the first step {}", startup_->summary());
      startup_ = nullptr;
    }
    if (fsdp_) {
      // What this rank received in all-gathers and sent into reduce-scatters during the step.
      j["gathered_bytes"] = fsdp_->bytes_gathered() - gathered;
      j["reduced_bytes"] = fsdp_->bytes_reduced() - reduced;
    }
    const bool console = rec.step % config_.train.log_interval == 0 || rec.step == last;
    if (console) {
      const double win = std::chrono::duration<double>(now - window_start).count();
      const double tps = static_cast<double>(config_.tokens_per_step()) * static_cast<double>(rec.step - window_first_step) /
                         std::max(win, 1e-9);
      j["tokens_per_s"] = tps;
      if (world_ > 1) j["tokens_per_s_per_rank"] = tps / world_;
      window_start = now;
      window_first_step = rec.step;
    }
    // A step boundary: the save in flight is committed once written on every rank, and a scheduled background
    // save starts (it copies this step's state; the evaluation below changes none of it). A failed write
    // (rank 0) stops every rank below, after the evaluation and the save that every rank runs.
    poll_pending_save(j);
    const bool scheduled = save_due(rec.step);
    if (scheduled && saver_) save_at_step(&j);
    std::exception_ptr write_error;
    try {
      log_step(rec, std::move(j), per_step, console);
    } catch (const IoError&) {
      write_error = std::current_exception();
    }
    const bool eval_now = (config_.train.eval_interval > 0 && rec.step % config_.train.eval_interval == 0) ||
                          rec.step == config_.train.max_steps;
    if (eval_now) {
      EvalResult e = evaluate();
      if (metrics_) metrics_->clear_progress();
      spdlog::info("step {:>6} | validation loss {:.4f} | perplexity {:.2f} ({} tokens)", rec.step, e.loss, e.perplexity,
                   e.tokens);
      try {
        if (!write_error) {
          write_metrics({{"step", rec.step}, {"val_loss", e.loss}, {"val_ppl", e.perplexity}, {"val_tokens", e.tokens}});
        }
      } catch (const IoError&) {
        write_error = std::current_exception();
      }
    }
    if (scheduled && !saver_) save_at_step(nullptr);  // after the step's records
    if (after_step(rec.step, last, write_error, scheduled)) return RunEnd::Stopped;
  }
  return RunEnd::Finished;
}

bool Trainer::after_step(int64_t step, int64_t last, std::exception_ptr write_error, bool saving) {
  if (interrupts_) interrupts_->report(RunProgress{step, saved_step_, false});
  Interrupt local = interrupts_ ? interrupts_->poll() : Interrupt::None;
  if (write_error) local = Interrupt::Fail;
  const auto agreed = static_cast<Interrupt>(max_over_ranks(static_cast<int64_t>(local)));
  if (agreed == Interrupt::Fail) stop_after_write_failure(write_error);
  const bool scheduled = saving;  // started at this step's boundary (run_steps; written in the background)
  if (agreed != Interrupt::None) {
    // Asked to save or stop: the checkpoint of this step is complete before going on (a scheduled one that is
    // being written in the background is waited for, else one is saved now).
    if (interrupts_) interrupts_->report(RunProgress{step, saved_step_, true});
    if (scheduled) {
      finish_pending_save();
    } else {
      save_checkpoint();
    }
    saved_step_ = step;
    if (interrupts_) interrupts_->report(RunProgress{step, saved_step_, false});
  }
  const std::string reason(interrupts_ ? interrupts_->stop_reason() : std::string_view());
  if (agreed == Interrupt::Save && !scheduled) {
    if (metrics_) metrics_->clear_progress();
    spdlog::info("saved a checkpoint of step {} as asked (SIGUSR1 or another rank's); training goes on", step);
  }
  if (agreed != Interrupt::Stop || step >= last) return false;
  if (metrics_) metrics_->clear_progress();
  spdlog::info("stopped after step {} ({}): checkpoint {} saved; continue with --resume auto", step,
               reason.empty() ? "asked by another rank" : reason,
               (io::checkpoints_root(run_dir_) / io::checkpoint_dir_name(step)).string());
  return true;
}

}  // namespace coat::train
