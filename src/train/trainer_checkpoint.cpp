// The checkpoint side of the Trainer: the snapshot of its state, synchronous and background saves at step
// boundaries (started, polled, committed, reported), and loading a checkpoint (masters, optimizer moments,
// sampler, step) for a resume. The rest of the class is in trainer.cpp.
#include "coat/train/trainer.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <map>

#include "coat/io/checkpoint.h"
#include "coat/io/checkpoint_reader.h"
#include "coat/io/tensor_file.h"
#include "coat/models/memory_plan.h"
#include "coat/train/checkpoint_save.h"
#include "coat/train/resume.h"
#include "coat/train/unit_state.h"

namespace coat::train {

std::optional<std::filesystem::path> Trainer::latest_checkpoint() const {
  auto info = io::latest_complete(run_dir_);
  if (!info) return std::nullopt;
  return info->dir;
}

CheckpointSnapshot Trainer::checkpoint_snapshot() const {
  CheckpointSnapshot snapshot;
  snapshot.step = step_;
  nlohmann::json& meta = snapshot.meta;
  meta["config"] = config_.resolved;
  meta["tokens_seen"] = tokens_seen_;
  meta["sampler"] = {{"epoch", sampler_->state().epoch}, {"position", sampler_->state().position}};
  meta["optimizer_step"] = optimizer_->step_count();
  meta["rng"] = {{"init_seed", config_.train.seed}, {"data_seed", config_.data.seed}};
  meta["world_size"] = world_;
  meta["shard_size"] = shard_world_;
  if (loss_mask_) meta["loss_mask"] = loss_mask_record(*loss_mask_);
  // Each rank of the first shard group writes its slices (the other replicas hold the same bytes).
  snapshot.layout = checkpoint_layout(model_->store(), *optimizer_);
  if (rank_ < shard_world_) {
    snapshot.file = comms_.shard ? comms_.shard->rank() : 0;
    snapshot.tensors = checkpoint_slices(model_->store(), *optimizer_);
  }
  return snapshot;
}

SaveCommitted Trainer::save_synchronously() {
  const auto started = std::chrono::steady_clock::now();
  const CommittedCheckpoint c =
      save_checkpoint_collectively(run_dir_, checkpoint_snapshot(), comms_.world, context_,
                                   static_cast<int>(config_.checkpoint.keep_last), rank_file_writer_);
  SaveCommitted out;
  out.step = step_;
  out.dir = c.dir;
  out.bytes = c.bytes;
  out.write_s = c.write_s;
  out.commit_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  out.background = false;
  return out;
}

void Trainer::save_checkpoint() {
  finish_pending_save();
  const SaveCommitted saved = save_synchronously();
  saved_step_ = saved.step;
  report_commit(saved, nullptr);
}

void Trainer::reserve_snapshot_buffers(int64_t last) {
  if (!saver_ || rank_ >= shard_world_) return;
  // Pinning tens of GB takes tens of seconds: it runs beside the first steps; the first save waits for it.
  const bool log = rank_ == 0;
  const std::string kind = context_->device().is_cpu() ? "" : "pinned ";
  const std::vector<std::pair<std::string, Tensor>> slices = checkpoint_slices(model_->store(), *optimizer_);
  saver_->reserve_in_background(slices, [log, kind](uint64_t bytes, double seconds) {
    if (log) {
      spdlog::info("checkpoint.async: {} of {}host memory for the snapshots of this rank's state, allocated "
                   "beside the first steps in {:.2f} s",
                   models::format_bytes(static_cast<double>(bytes)), kind, seconds);
    }
  });
  // The first keep_last + 1 saves have no retired checkpoint to overwrite: their files are reserved now, beside
  // the first steps (keep_last 0 keeps every checkpoint, so no save ever overwrites one: none then).
  const int64_t interval = config_.checkpoint.interval;
  int64_t saves = interval > 0 ? last / interval - step_ / interval : 0;
  if (last == config_.train.max_steps && (interval <= 0 || last % interval != 0)) ++saves;
  const int64_t keep = config_.checkpoint.keep_last;
  const int spares = keep <= 0 ? 0 : static_cast<int>(std::min<int64_t>(keep + 1, saves));
  const uint64_t bytes = io::tensor_file_bytes(slices);
  const int file = comms_.shard ? comms_.shard->rank() : 0;
  saver_->reserve_spares_in_background(
      spares, rank_, file, bytes, [log, bytes](int reserved, double seconds, const std::string& error) {
        if (!error.empty()) {
          spdlog::warn("checkpoint.async: could not reserve a file for one of the first saves ({}); they write "
                       "new files",
                       error);
        } else if (log) {
          spdlog::info("checkpoint.async: {} file(s) of {} reserved for the first saves in {:.2f} s", reserved,
                       models::format_bytes(static_cast<double>(bytes)), seconds);
        }
      });
}

void Trainer::save_at_step(nlohmann::json* record) {
  if (!saver_) {
    const SaveCommitted saved = save_synchronously();
    saved_step_ = saved.step;
    report_commit(saved, nullptr, saved.commit_s);
    return;
  }
  COAT_CHECK(record, Error, "save_at_step: a background save needs the step's record");
  // The next save waits for the previous one.
  if (std::optional<SaveCommitted> previous = saver_->finish()) report_commit(*previous, record);
  const SaveStarted started = saver_->start(checkpoint_snapshot());
  (*record)["save_blocked_s"] = started.snapshot_s;
  if (rank_ == 0) {
    spdlog::info("checkpoint step {}: snapshot of {} in {:.3f} s (training blocked), writing it in the "
                 "background",
                 started.step, models::format_bytes(static_cast<double>(started.snapshot_bytes)),
                 started.snapshot_s);
  }
}

void Trainer::poll_pending_save(nlohmann::json& record) {
  if (!saver_) return;
  if (std::optional<SaveCommitted> committed = saver_->poll()) {
    saved_step_ = committed->step;
    report_commit(*committed, &record);
  }
}

void Trainer::finish_pending_save() {
  if (!saver_) return;
  if (std::optional<SaveCommitted> committed = saver_->finish()) {
    saved_step_ = committed->step;
    report_commit(*committed, nullptr);
  }
}

void Trainer::settle_pending_save_after_failure() noexcept {
  if (!saver_ || !saver_->pending()) return;
  if (world_ == 1) {
    try {
      finish_pending_save();
    } catch (const std::exception& e) {
      spdlog::error("the checkpoint in flight could not be saved either: {}", e.what());
    }
    return;
  }
  spdlog::warn("rank {}: the run failed while a checkpoint was written in the background; it is not "
               "committed (the other ranks may not be at the same point); its staging directory is removed",
               rank_);
  saver_->abandon();
}

void Trainer::report_commit(const SaveCommitted& committed, nlohmann::json* record,
                            std::optional<double> blocked_s) {
  if (rank_ != 0) return;
  if (metrics_) metrics_->clear_progress();
  spdlog::info("{}{}", committed.describe(),
               committed.background ? fmt::format(", committed after step {}", step_) : std::string());
  nlohmann::json own = {{"step", step_}};
  nlohmann::json& r = record ? *record : own;
  r["save_step"] = committed.step;
  r["save_written_s"] = committed.write_s;
  r["save_bytes"] = committed.bytes;
  if (blocked_s) r["save_blocked_s"] = *blocked_s;
  if (committed.background) r["save_commit_blocked_s"] = committed.commit_s;
  if (record) return;
  // The checkpoint is complete whatever happens to this record (a full disk stops the run at its next write).
  try {
    write_metrics(own);
  } catch (const IoError& e) {
    spdlog::warn("{}", e.what());
  }
}

void Trainer::load_optimizer_states(const io::CheckpointReader& ck) {
  auto states = optimizer_->state_tensors();
  if (model_->store().sharding() || states.empty() || ck.contains(states.front().first)) {
    return load_state_slices(model_->store(), *optimizer_, ck);
  }
  // Checkpoints of earlier versions keep FP32 moments per parameter ("<parameter>.exp_avg"): read each into
  // its place in the unit's flat state.
  const bool f32 = optimizer_->config().exp_avg.encoding == ops::MomentEncoding::F32 &&
                   optimizer_->config().exp_avg_sq.encoding == ops::MomentEncoding::F32;
  const auto& params = model_->parameters();
  if (!f32 || params.empty() || !ck.contains(params.front().name + ".exp_avg")) {
    ck.read_into(states.front().first, states.front().second);  // throws, naming what is missing
  }
  std::map<std::string, Tensor> by_name(states.begin(), states.end());
  for (const models::ParamUnit& u : model_->units()) {
    for (const char* moment : {".exp_avg", ".exp_avg_sq"}) {
      const Tensor& flat = by_name.at(u.name + moment);
      for (size_t index : u.params) {
        const nn::Parameter& p = params[index];
        const int64_t begin = p.master.offset() - u.master.offset();
        Tensor view = flat.slice(0, begin, begin + p.master.numel());  // stored flat
        ck.read_into(p.name + moment, view);
      }
    }
  }
}

void Trainer::load_checkpoint(const std::filesystem::path& dir) {
  load_checkpoint(io::CheckpointReader::open(dir, config_.checkpoint.io_threads));
}

void Trainer::load_checkpoint(const io::CheckpointReader& ck) {
  const std::filesystem::path& dir = ck.dir();
  check_resumable(ck, config_);
  check_same_loss_mask(ck, loss_mask_ ? &*loss_mask_ : nullptr);
  if (ck.layout()) {
    // The same config in another build could lay the units out differently: compared key by key.
    if (auto difference = io::layout_difference(*ck.layout(), checkpoint_layout(model_->store(), *optimizer_))) {
      throw ConfigError(detail::concat("checkpoint '", dir.string(), "' has another unit layout: ", *difference));
    }
  }
  load_masters(model_->store(), ck);
  load_optimizer_states(ck);
  optimizer_->set_step_count(ck.meta().at("optimizer_step").get<int64_t>());
  model_->sync_compute_weights();
  step_ = ck.step();
  tokens_seen_ = ck.meta().at("tokens_seen").get<int64_t>();
  sampler_->set_state(data::SamplerState{ck.meta().at("sampler").at("epoch").get<uint64_t>(),
                                         ck.meta().at("sampler").at("position").get<uint64_t>()});
  spdlog::info("resumed from {} (step {}, {} tokens seen, written by {} rank{})", dir.string(), step_, tokens_seen_,
               ck.world_size(), ck.world_size() > 1 ? "s" : "");
}

bool Trainer::save_due(int64_t step) const {
  const int64_t interval = config_.checkpoint.interval;
  return (interval > 0 && step % interval == 0) || step == config_.train.max_steps;
}

}  // namespace coat::train
