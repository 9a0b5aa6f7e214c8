// The training loop: gradient accumulation to a global batch, AdamW with clipping and an LR schedule,
// evaluation on the validation split, metrics, and native checkpoints that make a resumed run continue
// bit-identically (parameters, optimizer moments and step, sampler position, tokens seen).
#pragma once

#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "coat/data/loss_mask_file.h"
#include "coat/data/token_file.h"
#include "coat/io/checkpoint_reader.h"
#include "coat/data/window_sampler.h"
#include "coat/dist/communicator.h"
#include "coat/dist/fsdp.h"
#include "coat/io/directory_lock.h"
#include "coat/models/transformer.h"
#include "coat/optim/adamw.h"
#include "coat/optim/lr_schedule.h"
#include "coat/train/interrupts.h"
#include "coat/train/async_saver.h"
#include "coat/train/checkpoint_save.h"
#include "coat/train/metrics_logger.h"
#include "coat/train/phase_timer.h"
#include "coat/train/startup_clock.h"
#include "coat/train/step_policy.h"
#include "coat/train/train_config.h"

namespace coat::train {

struct StepRecord {
  int64_t step = 0;
  double loss = 0.0;        ///< mean over the global batch's counted targets (NaN when none counted)
  int64_t loss_tokens = 0;  ///< targets counted in the loss (all ranks; fewer than the batch's under data.loss_mask)
  double lr = 0.0;
  double grad_norm = 0.0;
  bool skipped = false;
};

struct EvalResult {
  double loss = 0.0;  ///< mean over the counted validation targets (NaN when a loss mask leaves none)
  double perplexity = 0.0;
  int64_t tokens = 0;
};

/// The communicators of a run over several ranks (not owned; they must outlive the trainer). `world` spans
/// every rank (the batch split, the loss, checkpoints); `shard` the ranks each unit is sharded over (null: the
/// world); `replicate` the ranks holding the same slices under hybrid sharding (dist.shard_size below the
/// world: gradients are summed over it; null: none).
struct TrainerComms {
  TrainerComms(dist::Communicator* world_comm = nullptr, dist::Communicator* shard_comm = nullptr,  // NOLINT: implicit
               dist::Communicator* replicate_comm = nullptr)
      : world(world_comm), shard(shard_comm ? shard_comm : world_comm), replicate(replicate_comm) {}
  dist::Communicator* world = nullptr;
  dist::Communicator* shard = nullptr;
  dist::Communicator* replicate = nullptr;
};

/// How run() ended.
enum class RunEnd {
  Finished,  ///< train.max_steps (or stop_after_step) was reached
  Stopped,   ///< an InterruptSource asked to stop: a checkpoint of the last step was saved
};

class Trainer {
 public:
  /// Opens the data, builds and initialises the model and optimizer; writes nothing. `run_dir` must hold no
  /// earlier run (checkpoints or metrics) unless `resuming` is set: nothing already written is overwritten.
  /// With communicators of more than one rank the units are sharded over comms.shard (FSDP, dist/fsdp.h), each
  /// rank trains on its slice of every global batch, and rank 0 alone writes the run directory; every rank
  /// must then make the same calls in the same order.
  Trainer(TrainConfig config, ContextPtr context, bool resuming = false, TrainerComms comms = {});

  /// Takes the run directory's lock (io::DirectoryLock, "run.lock"; rank 0) now when the directory exists, so
  /// that a resume reads the checkpoints of a directory no other run writes; run() takes it otherwise.
  /// io::DirectoryLocked naming the holder's PID and host when another process holds it (on rank 0; the
  /// other ranks throw IoError pointing at rank 0). Collective.
  void lock_run_dir();

  /// Loads a checkpoint directory of any format and world size (each rank reads the ranges it holds): model,
  /// optimizer, sampler, step. A checkpoint of another model, state storage or unit layout is a ConfigError
  /// naming the key and both values (check_resumable, resume.h). Each tensor read is checksummed.
  void load_checkpoint(const std::filesystem::path& dir);
  /// The same from an open checkpoint: a resume's (open_resume_checkpoint, resume.h), whose rank files were
  /// verified whole, so that its tensors are not checksummed again.
  void load_checkpoint(const io::CheckpointReader& ck);
  /// The newest complete checkpoint of the run directory, if any.
  std::optional<std::filesystem::path> latest_checkpoint() const;
  /// Saves a checkpoint of the current step and returns when it is complete (format 2: each rank of the first
  /// shard group writes its slices; every rank must call it), after committing a save still in flight. A
  /// failure on any rank throws on every rank and leaves nothing behind.
  void save_checkpoint();

  /// Trains until train.max_steps, or until `stop_after_step` (to simulate an interruption in tests), or
  /// until the interrupt source asks to stop (Stopped, after saving a checkpoint of the last step). Saves a
  /// checkpoint every checkpoint.interval steps, at the end, and when the source asks for one. First opens the
  /// run directory (lock, config.json): after the config, the data and any resumed checkpoint were checked.
  /// A failed write of metrics.jsonl stops the run on every rank, after an attempt to save a checkpoint, with
  /// the IoError naming the file and the OS error (rank 0; the others point at rank 0).
  /// Under checkpoint.async a save blocks training only for a host copy of the state; the write goes on in the
  /// background and is committed at a later step boundary once every rank's write is done (the next save, a
  /// stop and the end of the call wait for it). A failed background write throws at the step where it is
  /// found, naming the file and the error. The blocked and written times go to the log and to metrics.jsonl
  /// (save_blocked_s at the save; save_step, save_written_s, save_bytes and save_commit_blocked_s where it is
  /// committed).
  RunEnd run(int64_t stop_after_step = -1);
  /// Polled once per step on every rank, the ranks agreeing on the largest request (one all-reduce of one
  /// integer per step); not owned; nullptr: none.
  void set_interrupts(InterruptSource* source) { interrupts_ = source; }
  /// The clock of the process's start-up: the first step that run() completes closes its last phase, and
  /// the breakdown is logged and written as time_to_first_step_s into that step's metrics record.
  void set_startup_clock(StartupClock* clock) { startup_ = clock; }
  /// Waits for a save still in flight and commits it (collective; nothing when none is). run() calls it at
  /// its end; a graceful stop calls it before leaving.
  void finish_pending_save();
  /// Replaces how this rank's checkpoint file is written (io::write_checkpoint_rank; tests inject failures
  /// and delays). Set it before run().
  void set_rank_file_writer(RankFileWriter writer) { rank_file_writer_ = std::move(writer); }
  /// One optimizer step over a global batch. Marks NVTX ranges "step", "forward", "backward" and
  /// "optimizer", and times the last three with the phase timer when one is set. On out-of-memory it logs
  /// the config's memory plan with what would fit (memory_advice.h) and rethrows OutOfMemory naming the
  /// step and its shape.
  StepRecord train_step();
  /// Times the phases of the following steps with `timer` (not owned; nullptr: none).
  void set_phase_timer(PhaseTimer* timer) { phase_timer_ = timer; }
  EvalResult evaluate();

  int64_t step() const { return step_; }
  const std::vector<StepRecord>& history() const { return history_; }
  models::Transformer& model() { return *model_; }
  const optim::AdamW& optimizer() const { return *optimizer_; }
  const TrainConfig& config() const { return config_; }
  const std::filesystem::path& run_dir() const { return run_dir_; }
  /// Unigram entropy (nats/token) of the validation tokens: the loss of a model that knows only token
  /// frequencies, printed beside the validation loss.
  double validation_unigram_entropy() const;

 private:
  /// The AdamW states of a checkpoint into the optimizer (also from the per-parameter FP32 layout of
  /// earlier versions); load_checkpoint has checked the state storage (check_resumable).
  void load_optimizer_states(const io::CheckpointReader& ck);
  void load_batch(const std::vector<uint64_t>& windows, Tensor& ids, Tensor& targets) const;
  /// The constructor's steps: the run directory and batch shape checks (on every rank, before anything is
  /// written), the model (sharded over the ranks, with FSDP's hooks, when there are several), its weights
  /// (init, or train.init_from), the optimizer over the units and the step policy, the run directory.
  void check_setup(bool resuming) const;
  /// The dist keys a sharded run cannot honour yet are refused by name.
  void check_dist_keys() const;
  void build_model();
  /// FSDP's options from the dist keys (FP8 all-gather under the per-tensor FP8 recipes only).
  dist::FsdpOptions fsdp_options() const;
  void init_weights();
  void build_optimizer();
  /// Rank 0 takes the lock, writes config.json and prepares metrics.jsonl; every rank learns whether it
  /// could (collective). Once per trainer.
  void open_run_dir();
  void write_run_dir_files();
  /// On rank 0: the lock when not held yet (a DirectoryLocked error says that the directory is in use).
  void take_run_dir_lock();
  /// Runs `work` on rank 0 and rethrows its exception there; the other ranks throw IoError naming
  /// `what` (collective: every rank learns whether rank 0 succeeded).
  void on_rank0_collectively(const std::string& what, const std::function<void()>& work);
  /// The largest `value` over the world's ranks (the value itself in one process).
  int64_t max_over_ranks(int64_t value) const;
  /// The per-step record to metrics.jsonl (rank 0), and the console line every log interval.
  void log_step(const StepRecord& rec, nlohmann::json record, double per_step, bool console);
  /// One record to metrics.jsonl on rank 0 (opened on the first record).
  void write_metrics(const nlohmann::json& record);
  /// After step `step` (of `last`): the ranks agree on the interrupts, make this step's checkpoint complete
  /// when asked (`saving`: a scheduled save of this step was started, and is waited for), and say whether to
  /// stop (after a failed write: throws, from stop_after_write_failure).
  bool after_step(int64_t step, int64_t last, std::exception_ptr write_error, bool saving);
  /// After a failed metrics write: every rank tries to save a checkpoint, then throws.
  [[noreturn]] void stop_after_write_failure(std::exception_ptr local_error);
  /// train_step's work: the micro-batches' forwards and backwards with the step policy's unit hooks, then
  /// the policy's end. train_step adds the memory plan to an out-of-memory error.
  StepRecord run_step();
  /// Records the step (its norm, whether it was skipped: a non-finite loss or gradient stops the run or is
  /// logged, per train.on_nonfinite, naming the culprit and what was updated).
  StepRecord finish_step(StepRecord rec, const StepOutcome& outcome);
  /// The step's end, taken or skipped: the step and tokens seen advance, the record joins the history.
  StepRecord record_step(const StepRecord& rec);
  /// Targets of these windows that count in the loss (all of them without data.loss_mask).
  int64_t counted_targets(const std::vector<uint64_t>& windows) const;
  /// A step whose global batch has no counted target (data.loss_mask): skipped with a warning, nothing updated.
  StepRecord skip_step_without_targets(StepRecord rec);

  /// run()'s loop up to step `last`: steps, their log lines and metrics records, saves and evaluations;
  /// Stopped when the interrupts asked for it.
  RunEnd run_steps(int64_t last);
  /// A checkpoint is saved after `step` (every checkpoint.interval steps and at train.max_steps).
  bool save_due(int64_t step) const;
  /// The checkpoint of the current step: its meta and layout, and this rank's slices (views of live state).
  CheckpointSnapshot checkpoint_snapshot() const;
  /// save_checkpoint's work, with its figures.
  SaveCommitted save_synchronously();
  /// Before the first save of a run() under checkpoint.async: the host snapshot buffers, allocated once.
  /// The background saver's host buffers, and spare rank files for the first saves up to step `last`.
  void reserve_snapshot_buffers(int64_t last);
  /// A save at a step of run(): asynchronous (after finishing the one in flight) or synchronous, per
  /// checkpoint.async. A background save starts before the step's metrics are written and its cost goes into
  /// their `record`; a synchronous one runs after them (`record` null) with a record of its own, so that a
  /// complete checkpoint is never ahead of metrics.jsonl (a resume continues after the checkpoint's step).
  void save_at_step(nlohmann::json* record);
  /// At a step boundary of run(): commits the save in flight when every rank's write is done.
  void poll_pending_save(nlohmann::json& record);
  /// run() failed with a save in flight: one process commits it (nothing it wrote is lost); under several
  /// ranks it is left uncommitted (the others may not be at the same point) and its writer joined.
  void settle_pending_save_after_failure() noexcept;
  /// Logs a committed save and adds its figures to `record` (nullptr: a record of its own).
  void report_commit(const SaveCommitted& committed, nlohmann::json* record,
                     std::optional<double> blocked_s = std::nullopt);

  TrainConfig config_;
  ContextPtr context_;
  TrainerComms comms_;  ///< not owned; world null: one process
  int rank_ = 0;
  int world_ = 1;
  int shard_world_ = 1;  ///< ranks each unit is sharded over (== world_ but under hybrid sharding)
  std::filesystem::path run_dir_;
  data::TokenFile tokens_;
  std::optional<data::LossMaskFile> loss_mask_;  ///< data.loss_mask (none: every target counts)
  std::unique_ptr<data::WindowSampler> sampler_;
  std::unique_ptr<models::Transformer> model_;
  std::unique_ptr<optim::AdamW> optimizer_;
  std::unique_ptr<dist::FsdpUnits> fsdp_;    ///< the sharded units' gathers and reductions (world > 1)
  std::unique_ptr<StepPolicy> step_policy_;  ///< how the step applies optimizer_ (after or in the backward)
  std::unique_ptr<models::UnitHookChain> step_hooks_;  ///< fsdp_ then step_policy_, during a step
  optim::LrSchedule schedule_;
  std::unique_ptr<MetricsLogger> metrics_;  ///< rank 0, from the first record on
  bool resuming_ = false;
  bool run_dir_open_ = false;
  io::DirectoryLock run_dir_lock_;  ///< rank 0
  InterruptSource* interrupts_ = nullptr;
  StartupClock* startup_ = nullptr;  ///< reset once the first step closed it
  int64_t saved_step_ = -1;  ///< the newest checkpoint this trainer wrote or resumed from (-1: none)
  int64_t step_ = 0;
  int64_t tokens_seen_ = 0;
  std::vector<StepRecord> history_;
  PhaseTimer* phase_timer_ = nullptr;
  RankFileWriter rank_file_writer_;    ///< rank_file_writer(checkpoint.io_threads) unless a test replaced it
  std::unique_ptr<AsyncSaver> saver_;  ///< checkpoint.async; after rank_file_writer_, which its writer calls
};

}  // namespace coat::train
