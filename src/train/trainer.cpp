#include "coat/train/trainer.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <map>

#include "coat/core/nvtx.h"
#include "coat/io/atomic_file.h"
#include "coat/io/checkpoint.h"
#include "coat/models/memory_plan.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/reduce.h"
#include "coat/optim/adamw.h"
#include "coat/ops/runtime.h"
#include "coat/train/memory_advice.h"
#include "coat/train/model_loader.h"

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

bool has_previous_run(const std::filesystem::path& dir) {
  return std::filesystem::exists(dir / "metrics.jsonl") || std::filesystem::exists(dir / "checkpoints");
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

Trainer::Trainer(TrainConfig config, ContextPtr context, bool resuming)
    : config_(std::move(config)),
      context_(std::move(context)),
      run_dir_(config_.logging.run_dir),
      tokens_(open_tokens(config_.data, config_.model.vocab_size)) {
  if (!resuming && has_previous_run(run_dir_)) {
    throw ConfigError(detail::concat("run directory '", run_dir_.string(),
                                     "' already holds a run (metrics.jsonl or checkpoints); pass --resume auto to "
                                     "continue it, or set logging.run_dir to a new directory"));
  }
  sampler_ = std::make_unique<data::WindowSampler>(tokens_.size(), static_cast<uint64_t>(config_.data.seq_len),
                                                   config_.data.seed, config_.data.validation_fraction);
  if (sampler_->train_windows() == 0) {
    throw ConfigError(detail::concat("token file '", config_.data.path, "' holds ", tokens_.size(),
                                     " tokens: too few for one training window of data.seq_len = ", config_.data.seq_len));
  }
  if (config_.precision.recipe == models::RecipeKind::FP32 && context_->device().is_cuda()) {
    throw ConfigError("config: 'precision.recipe' = \"fp32\" is the CPU reference; on CUDA use \"bf16\" (cuDNN's "
                      "fused attention runs in BF16)");
  }
  // bf16, fp8, coat: BF16 compute weights and activations, FP32 master weights and gradients (the FP8 recipes
  // add FP8 GEMMs and, under coat, compressed saved activations: models/precision_recipe.h).
  const std::optional<DType> compute =
      config_.precision.computes_in_bf16() ? std::optional<DType>(DType::BF16) : std::nullopt;
  models::TransformerOptions options;
  options.recipe = recipe_of(config_);
  options.share_block_grads = config_.optim.apply_in_backward;
  model_ = std::make_unique<models::Transformer>(config_.model, context_, DType::F32, /*with_grads=*/true, compute,
                                                 options);
  model_->set_recompute(config_.train.recompute);
  model_->init(config_.train.seed);
  if (!config_.train.init_from.empty()) {
    LoadedModel source = load_model(config_.train.init_from, context_);
    if (source.model->config() != config_.model) {
      throw ConfigError(detail::concat("train.init_from '", config_.train.init_from, "' holds another model: ",
                                       source.model->config().to_json().dump(), "; this config has ",
                                       config_.model.to_json().dump()));
    }
    for (size_t i = 0; i < model_->parameters().size(); ++i) {
      ops::copy_(model_->parameters()[i].master, source.model->parameters()[i].master);
    }
    model_->sync_compute_weights();
    spdlog::info("initialised weights from {}", source.checkpoint.string());
  }
  // One optimizer buffer per flat unit: one fused update per unit and step.
  std::vector<optim::UnitView> units;
  for (models::ParamUnit& u : model_->units()) {
    // With a BF16 compute copy the optimizer refreshes it in its own pass (no sync_compute_weights after a step;
    // the separate copies of a unit without a full one are refreshed by weights_changed).
    optim::UnitView view{u.name, u.master, u.grad, {},
                         !u.value.defined() || u.value.shares_storage_with(u.master) ? Tensor() : u.value};
    for (size_t index : u.params) {
      nn::Parameter& p = model_->parameters()[index];
      view.params.emplace_back(p.master.flatten(),
                               optim::default_decay(p.name, config_.optim.decay_embeddings, config_.optim.decay_norms));
    }
    units.push_back(std::move(view));
  }
  optim::AdamWConfig oc;
  oc.beta1 = static_cast<float>(config_.optim.beta1);
  oc.beta2 = static_cast<float>(config_.optim.beta2);
  oc.eps = static_cast<float>(config_.optim.eps);
  oc.weight_decay = static_cast<float>(config_.optim.weight_decay);
  oc.clip_grad_norm = static_cast<float>(config_.optim.clip_grad_norm);
  oc.exp_avg = exp_avg_spec(config_.optim);
  oc.exp_avg_sq = exp_avg_sq_spec(config_.optim);
  optimizer_ = std::make_unique<optim::AdamW>(optim::make_buffers(units), oc);
  schedule_ = make_schedule(config_);

  std::filesystem::create_directories(run_dir_);
  io::write_string_atomically(run_dir_ / "config.json", config_.resolved.dump(2) + "\n");
  const bool tty = isatty(STDERR_FILENO) != 0;
  const bool progress = config_.logging.progress == ProgressDisplay::On ||
                        (config_.logging.progress == ProgressDisplay::Auto && tty);
  metrics_ = std::make_unique<MetricsLogger>(run_dir_ / "metrics.jsonl", progress);
}

void Trainer::load_batch(const std::vector<uint64_t>& windows, Tensor& ids, Tensor& targets) const {
  const int64_t seq = config_.data.seq_len;
  const int64_t rows = static_cast<int64_t>(windows.size());
  std::vector<int32_t> window(static_cast<size_t>(seq + 1));
  std::vector<double> id_values(static_cast<size_t>(rows * seq)), target_values(static_cast<size_t>(rows * seq));
  for (int64_t r = 0; r < rows; ++r) {
    tokens_.read(sampler_->window_start(windows[static_cast<size_t>(r)]), window,
                 static_cast<uint32_t>(config_.model.vocab_size));
    for (int64_t t = 0; t < seq; ++t) {
      id_values[static_cast<size_t>(r * seq + t)] = window[static_cast<size_t>(t)];
      target_values[static_cast<size_t>(r * seq + t)] = window[static_cast<size_t>(t + 1)];
    }
  }
  ids = ops::from_vector(context_, {rows, seq}, DType::I32, id_values);
  targets = ops::from_vector(context_, {rows, seq}, DType::I32, target_values);
}

std::string Trainer::first_nonfinite_gradient() const {
  for (const nn::Parameter& p : model_->parameters()) {
    const double a = ops::to_double_vector(ops::amax(p.grad))[0];
    if (!std::isfinite(a)) return p.name;
  }
  return "";
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
  if (config_.optim.apply_in_backward) return run_step_applying_in_backward();
  const NvtxRange step_range("step");
  const int64_t micro = config_.train.micro_batch_size;
  const int64_t accum = config_.accumulation_steps();
  const double grad_scale = 1.0 / static_cast<double>(config_.tokens_per_step());
  model_->zero_grad(/*defer_linear=*/true);
  double loss_sum = 0.0;
  int64_t count = 0;
  for (int64_t a = 0; a < accum; ++a) {
    Tensor ids, targets;
    load_batch(sampler_->next(static_cast<uint64_t>(micro)), ids, targets);
    autograd::Tape tape;
    nn::LossOutput out;
    {
      const PhaseTimer::Scope phase(phase_timer_, Phase::Forward);
      out = model_->forward(tape, ids, targets, /*ignore_index=*/-1, grad_scale);
    }
    {
      const PhaseTimer::Scope phase(phase_timer_, Phase::Backward);
      tape.backward(out.root, ops::full(context_, {1}, 1.0, DType::F64));
    }
    loss_sum += out.loss_sum;
    count += out.count;
  }
  model_->finish_grads();
  StepRecord rec;
  rec.step = step_ + 1;
  rec.loss = loss_sum / static_cast<double>(count);
  rec.lr = schedule_.lr_at(rec.step);
  const bool loss_finite = std::isfinite(rec.loss);
  optim::StepStats stats{};
  if (loss_finite) {
    const PhaseTimer::Scope phase(phase_timer_, Phase::Optimizer);
    stats = optimizer_->step(static_cast<float>(rec.lr));
    model_->weights_changed();  // the FP8 weight copies are made again at their next use
    // (the optimizer wrote the BF16 compute weights in the same pass as the update)
  }
  const std::string culprit = !loss_finite ? "the loss" : stats.skipped ? first_nonfinite_gradient() : "";
  return finish_step(rec, stats, loss_finite, culprit, "Nothing was updated");
}

StepRecord Trainer::run_step_applying_in_backward() {
  const NvtxRange step_range("step");
  // One micro-batch (the config checks it); each unit is updated from the hook that the model calls when its
  // gradients are complete, and the block units share one gradient buffer, zeroed again for the next block.
  const double grad_scale = 1.0 / static_cast<double>(config_.tokens_per_step());
  StepRecord rec;
  rec.step = step_ + 1;
  rec.lr = schedule_.lr_at(rec.step);
  model_->zero_grad(/*defer_linear=*/true);
  Tensor ids, targets;
  load_batch(sampler_->next(static_cast<uint64_t>(config_.train.micro_batch_size)), ids, targets);
  autograd::Tape tape;
  nn::LossOutput out;
  {
    const PhaseTimer::Scope phase(phase_timer_, Phase::Forward);
    out = model_->forward(tape, ids, targets, /*ignore_index=*/-1, grad_scale);
  }
  rec.loss = out.loss_sum / static_cast<double>(out.count);
  const bool loss_finite = std::isfinite(rec.loss);
  optim::StepStats stats{};
  std::optional<size_t> failed_unit;  // the first unit whose gradient was not finite
  if (loss_finite) {
    const PhaseTimer::Scope phase(phase_timer_, Phase::Backward);  // the updates run inside the backward
    optimizer_->begin_step(static_cast<float>(rec.lr));
    model_->set_grads_ready_hook([this, &failed_unit](size_t unit) {
      model_->finish_unit_grads(unit);
      if (!optimizer_->update_buffer(unit) && !failed_unit) failed_unit = unit;
      if (model_->shares_block_grads() && model_->units()[unit].layer >= 0) model_->zero_unit_grad(unit, true);
    });
    try {
      tape.backward(out.root, ops::full(context_, {1}, 1.0, DType::F64));
    } catch (...) {
      model_->set_grads_ready_hook({});
      optimizer_->end_step();
      throw;
    }
    model_->set_grads_ready_hook({});
    stats = optimizer_->end_step();
    model_->weights_changed();
  }
  const std::string culprit = !loss_finite ? "the loss"
                              : failed_unit ? "the gradient of unit '" + model_->units()[*failed_unit].name + "'"
                                            : "";
  return finish_step(rec, stats, loss_finite, culprit,
                     stats.skipped ? "The units whose gradients were complete before it (optim.apply_in_backward) "
                                     "kept their update; the others were not updated"
                                   : "Nothing was updated");
}

StepRecord Trainer::finish_step(StepRecord rec, const optim::StepStats& stats, bool loss_finite,
                                const std::string& culprit, const std::string& updated) {
  rec.grad_norm = stats.grad_norm;
  rec.skipped = !loss_finite || stats.skipped;
  if (rec.skipped) {
    const std::string what = detail::concat("non-finite ", loss_finite ? "gradient" : "loss", " at step ", rec.step,
                                            " (loss ", rec.loss, ", grad norm ", rec.grad_norm,
                                            "); first non-finite tensor: ", culprit.empty() ? "?" : culprit);
    if (config_.train.on_nonfinite == NonfinitePolicy::Stop) {
      throw Error(what + ". " + updated + "; lower optim.lr or resume from the last checkpoint.");
    }
    spdlog::warn("{}; step skipped (train.on_nonfinite = skip)", what);
  }
  step_ = rec.step;
  tokens_seen_ += config_.tokens_per_step();
  history_.push_back(rec);
  return rec;
}

EvalResult Trainer::evaluate() {
  EvalResult r;
  const uint64_t windows = sampler_->validation_windows();
  if (windows == 0) return r;
  const uint64_t micro = static_cast<uint64_t>(config_.train.micro_batch_size);
  uint64_t limit = config_.train.eval_batches == 0 ? windows : std::min<uint64_t>(windows, micro * static_cast<uint64_t>(config_.train.eval_batches));
  double loss_sum = 0.0;
  for (uint64_t start = 0; start < limit; start += micro) {
    std::vector<uint64_t> batch;
    // An evenly spread subset of the validation windows when not all of them are used.
    for (uint64_t i = start; i < std::min(limit, start + micro); ++i) batch.push_back(sampler_->validation_window(i * windows / limit));
    Tensor ids, targets;
    load_batch(batch, ids, targets);
    autograd::Tape tape(/*grad_enabled=*/false);
    nn::LossOutput out = model_->forward(tape, ids, targets, -1, 1.0);
    loss_sum += out.loss_sum;
    r.tokens += out.count;
  }
  r.loss = loss_sum / static_cast<double>(r.tokens);
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

std::optional<std::filesystem::path> Trainer::latest_checkpoint() const {
  auto info = io::latest_complete(run_dir_);
  if (!info) return std::nullopt;
  return info->dir;
}

void Trainer::save_checkpoint() {
  nlohmann::json meta;
  meta["config"] = config_.resolved;
  meta["step"] = step_;
  meta["tokens_seen"] = tokens_seen_;
  meta["sampler"] = {{"epoch", sampler_->state().epoch}, {"position", sampler_->state().position}};
  meta["optimizer_step"] = optimizer_->step_count();
  meta["rng"] = {{"init_seed", config_.train.seed}, {"data_seed", config_.data.seed}};
  meta["world_size"] = 1;
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const nn::Parameter& p : model_->parameters()) tensors.emplace_back(p.name, p.master);
  for (auto& s : optimizer_->state_tensors()) tensors.push_back(s);
  io::save_checkpoint(run_dir_, step_, meta, tensors, static_cast<int>(config_.checkpoint.keep_last));
}

void Trainer::load_optimizer_states(const io::LoadedCheckpoint& ck) {
  // The states must be stored as this run stores them (a change of the state storage cannot resume). The
  // storages that the two configs produce are compared, not their spellings.
  if (ck.meta.contains("config") && ck.meta["config"].contains("optim")) {
    const nlohmann::json& saved = ck.meta["config"]["optim"];
    // A key the checkpoint lacks is this config's (a moment's dtype: the checkpoint's state_dtype).
    OptimConfig before = config_.optim;
    if (saved.contains("state_dtype")) {
      before.state_dtype = parse_state_dtype(saved["state_dtype"].get<std::string>());
    }
    const auto moment_dtype = [&saved](const char* key) -> std::optional<ops::MomentEncoding> {
      const std::string spelled = saved.value(key, std::string());
      if (spelled.empty()) return std::nullopt;  // early versions wrote "" for "as state_dtype"
      return parse_state_dtype(spelled);
    };
    before.exp_avg_dtype = moment_dtype("exp_avg_dtype");
    before.exp_avg_sq_dtype = moment_dtype("exp_avg_sq_dtype");
    if (saved.contains("exp_avg_fp8")) {
      before.exp_avg_fp8 = parse_moment_fp8(saved["exp_avg_fp8"].get<std::string>());
    }
    if (saved.contains("exp_avg_sq_fp8")) {
      before.exp_avg_sq_fp8 = parse_moment_fp8(saved["exp_avg_sq_fp8"].get<std::string>());
    }
    before.state_group_size = saved.value("state_group_size", before.state_group_size);
    auto same = [](const ops::MomentSpec& a, const ops::MomentSpec& b) {
      if (a.encoding != b.encoding) return false;
      const bool grouped = a.encoding == ops::MomentEncoding::FP8 || a.encoding == ops::MomentEncoding::FP8Expand;
      return !grouped || (a.fp8 == b.fp8 && a.group_size == b.group_size);
    };
    struct Moment {
      const char* name;
      ops::MomentSpec was, now;
    };
    for (const Moment& m : {Moment{"exp_avg", exp_avg_spec(before), optimizer_->config().exp_avg},
                            Moment{"exp_avg_sq", exp_avg_sq_spec(before), optimizer_->config().exp_avg_sq}}) {
      if (same(m.was, m.now)) continue;
      throw ConfigError(detail::concat("checkpoint ", ck.dir.string(), " stores the AdamW moment ", m.name, " as ",
                                       ops::moment_spec_str(m.was), " but this config stores it as ",
                                       ops::moment_spec_str(m.now), " (optim.state_dtype / optim.", m.name,
                                       "_dtype / _fp8 / optim.state_group_size); resume with the checkpoint's setting"));
    }
  }
  auto states = optimizer_->state_tensors();
  if (states.empty() || ck.tensors.contains(states.front().first)) {
    for (auto& [name, t] : states) ck.tensors.read_into(name, t);
    return;
  }
  // Checkpoints of earlier versions keep FP32 moments per parameter ("<parameter>.exp_avg"): read each into
  // its place in the unit's flat state.
  const bool f32 = optimizer_->config().exp_avg.encoding == ops::MomentEncoding::F32 &&
                   optimizer_->config().exp_avg_sq.encoding == ops::MomentEncoding::F32;
  const auto& params = model_->parameters();
  if (!f32 || params.empty() || !ck.tensors.contains(params.front().name + ".exp_avg")) {
    ck.tensors.read_into(states.front().first, states.front().second);  // throws, naming what is missing
  }
  std::map<std::string, Tensor> by_name(states.begin(), states.end());
  for (const models::ParamUnit& u : model_->units()) {
    for (const char* moment : {".exp_avg", ".exp_avg_sq"}) {
      const Tensor& flat = by_name.at(u.name + moment);
      for (size_t index : u.params) {
        const nn::Parameter& p = params[index];
        const int64_t begin = p.master.offset() - u.master.offset();
        Tensor view = flat.slice(0, begin, begin + p.master.numel());  // stored flat
        ck.tensors.read_into(p.name + moment, view);
      }
    }
  }
}

void Trainer::load_checkpoint(const std::filesystem::path& dir) {
  io::LoadedCheckpoint ck = io::open_checkpoint(dir);
  if (ck.meta.value("weights_only", false)) {
    throw ConfigError(detail::concat("checkpoint '", dir.string(), "' holds weights only (an import): start a run from it "
                                     "with --set train.init_from=", dir.parent_path().parent_path().string(),
                                     " instead of --resume"));
  }
  const nlohmann::json& saved_model = ck.meta.at("config").at("model");
  if (saved_model != config_.resolved.at("model")) {
    throw ConfigError(detail::concat("checkpoint '", dir.string(), "' was written for another model: ", saved_model.dump(),
                                     "; this config has ", config_.resolved.at("model").dump()));
  }
  for (nn::Parameter& p : model_->parameters()) ck.tensors.read_into(p.name, p.master);
  load_optimizer_states(ck);
  optimizer_->set_step_count(ck.meta.at("optimizer_step").get<int64_t>());
  model_->sync_compute_weights();
  step_ = ck.meta.at("step").get<int64_t>();
  tokens_seen_ = ck.meta.at("tokens_seen").get<int64_t>();
  sampler_->set_state(data::SamplerState{ck.meta.at("sampler").at("epoch").get<uint64_t>(),
                                         ck.meta.at("sampler").at("position").get<uint64_t>()});
  spdlog::info("resumed from {} (step {}, {} tokens seen)", dir.string(), step_, tokens_seen_);
}

void Trainer::run(int64_t stop_after_step) {
  const int64_t last = stop_after_step > 0 ? std::min(stop_after_step, config_.train.max_steps) : config_.train.max_steps;
  const int64_t interval = config_.checkpoint.interval;
  auto started = std::chrono::steady_clock::now();
  auto window_start = started;  // time and step of the last log line
  int64_t window_first_step = step_;
  int64_t steps_run = 0;     // steps run by this call
  while (step_ < last) {
    StepRecord rec = train_step();
    ++steps_run;
    const auto now = std::chrono::steady_clock::now();
    const double elapsed = std::chrono::duration<double>(now - started).count();
    const double per_step = elapsed / static_cast<double>(steps_run);
    nlohmann::json j = {{"step", rec.step},         {"loss", rec.loss},        {"lr", rec.lr},
                        {"grad_norm", rec.grad_norm}, {"skipped", rec.skipped}, {"tokens", tokens_seen_},
                        {"time_s", elapsed},        {"mem_bytes", context_->allocator().memory_report().total_current_bytes}};
    if (rec.step % config_.train.log_interval == 0 || rec.step == last) {
      const double win = std::chrono::duration<double>(now - window_start).count();
      const double tps = static_cast<double>(config_.tokens_per_step()) * static_cast<double>(rec.step - window_first_step) /
                         std::max(win, 1e-9);
      j["tokens_per_s"] = tps;
      metrics_->clear_progress();
      spdlog::info("step {:>6}/{} | loss {:.4f} | lr {:.3e} | grad norm {:.3f} | {:.0f} tok/s | mem {}", rec.step,
                   config_.train.max_steps, rec.loss, rec.lr, rec.grad_norm, tps,
                   models::format_bytes(static_cast<double>(context_->allocator().memory_report().total_current_bytes)));
      window_start = now;
      window_first_step = rec.step;
    }
    metrics_->write(j);
    metrics_->progress(rec.step, config_.train.max_steps, rec.loss, per_step);
    const bool eval_now = (config_.train.eval_interval > 0 && rec.step % config_.train.eval_interval == 0) ||
                          rec.step == config_.train.max_steps;
    if (eval_now) {
      EvalResult e = evaluate();
      metrics_->clear_progress();
      spdlog::info("step {:>6} | validation loss {:.4f} | perplexity {:.2f} ({} tokens)", rec.step, e.loss, e.perplexity,
                   e.tokens);
      metrics_->write({{"step", rec.step}, {"val_loss", e.loss}, {"val_ppl", e.perplexity}, {"val_tokens", e.tokens}});
    }
    if ((interval > 0 && rec.step % interval == 0) || rec.step == config_.train.max_steps) save_checkpoint();
  }
  metrics_->clear_progress();
}

}  // namespace coat::train
