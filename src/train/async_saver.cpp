// The background checkpoint writer: host snapshot, writer thread, agreement and commit on the training
// thread.
#include "coat/core/host_memory.h"
#include "coat/train/async_saver.h"

#include <fmt/format.h>

#include <chrono>
#include <system_error>
#include <utility>

#include "coat/core/error.h"
#include "coat/dist/host_collectives.h"
#include "coat/io/checkpoint.h"
#include "coat/io/tensor_bytes.h"
#include "coat/models/memory_plan.h"

namespace coat::train {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

/// The error of a retired checkpoint that could not be deleted.
IoError retired_not_deleted(const std::exception& e) {
  return IoError(detail::concat("a checkpoint beyond checkpoint.keep_last could not be deleted: ", e.what(),
                                " (the next start removes it)"));
}

}  // namespace

std::string SaveCommitted::describe() const {
  const std::string size = models::format_bytes(static_cast<double>(bytes));
  const std::string rate =
      fmt::format("{:.2f} GB/s", write_s > 0.0 ? static_cast<double>(bytes) / 1e9 / write_s : 0.0);
  if (!background) {
    return fmt::format(
        "checkpoint step {} saved to {}: training blocked {:.3f} s, written in {:.3f} s ({}, {})", step,
        dir.string(), commit_s, write_s, size, rate);
  }
  return fmt::format(
      "checkpoint step {} saved to {}: training blocked {:.3f} s (snapshot) + {:.3f} s (commit), written in "
      "the "
      "background in {:.3f} s ({}, {})",
      step, dir.string(), snapshot_s, commit_s, write_s, size, rate);
}

AsyncSaver::AsyncSaver(fs::path run_dir, dist::Communicator* world, ContextPtr context, ContextPtr host,
                       int keep_last, RankFileWriter writer)
    : run_dir_(std::move(run_dir)),
      world_(world),
      context_(std::move(context)),
      host_(std::move(host)),
      keep_last_(keep_last),
      writer_(std::move(writer)) {
  COAT_ARG_CHECK(context_ && host_ && host_->device().is_cpu(), "AsyncSaver",
                 "needs a context and a CPU context for the snapshot buffers");
  COAT_ARG_CHECK(keep_last_ >= 0, "AsyncSaver", "keep_last ", keep_last_, " is negative");
}

AsyncSaver::~AsyncSaver() {
  if (reserver_.joinable()) reserver_.join();
  if (pending_ && pending_->writer.joinable()) pending_->writer.join();
  drop_unused_spares();
  remove_spent_spare();
  if (remover_.joinable()) remover_.join();  // a failure leaves a .trash directory, removed at the next start
}

void AsyncSaver::wait_for_removals() {
  if (remover_.joinable()) remover_.join();
  if (std::exception_ptr error = std::exchange(remove_error_, nullptr)) std::rethrow_exception(error);
}

void AsyncSaver::reserve_spares_in_background(int count, int rank, int file, uint64_t bytes,
                                              std::function<void(int, double, const std::string&)> on_done) {
  if (count <= 0 || !spare_files_.empty() || pending_ || !recycle_dir_.empty()) return;
  auto ready = std::make_shared<std::vector<std::promise<void>>>(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    spare_files_.push_back(io::spare_rank_file_dir(run_dir_, i, rank) / io::checkpoint_rank_file_name(file));
    spare_ready_.push_back((*ready)[static_cast<size_t>(i)].get_future().share());
  }
  try {
    spare_thread_ = std::thread([this, ready, count, rank, file, bytes, on_done = std::move(on_done)] {
      const auto started = Clock::now();
      int reserved = 0;
      std::string error;
      for (; reserved < count; ++reserved) {
        try {
          io::reserve_spare_rank_file(run_dir_, reserved, rank, file, bytes);
        } catch (const std::exception& e) {
          error = e.what();
          break;
        }
        (*ready)[static_cast<size_t>(reserved)].set_value();
      }
      for (int i = reserved; i < count; ++i) (*ready)[static_cast<size_t>(i)].set_value();  // new files then
      if (on_done) on_done(reserved, seconds_since(started), error);
    });
  } catch (const std::system_error&) {
    for (auto& r : *ready) r.set_value();  // no thread: the saves write new files
  }
}

void AsyncSaver::remove_spent_spare() noexcept {
  if (spent_spare_dir_.empty()) return;
  std::error_code ec;
  fs::remove_all(std::exchange(spent_spare_dir_, fs::path()), ec);  // a leftover is trash: the next start
}

std::string AsyncSaver::remove_unused_spares() noexcept {
  if (spare_thread_.joinable()) spare_thread_.join();
  std::string failed;
  for (size_t i = next_spare_; i < spare_files_.size(); ++i) {
    std::error_code ec;
    fs::remove_all(spare_files_[i].parent_path(), ec);
    if (ec && failed.empty()) failed = spare_files_[i].parent_path().string() + ": " + ec.message();
  }
  next_spare_ = spare_files_.size();
  return failed;
}

void AsyncSaver::drop_unused_spares() noexcept {
  (void)remove_unused_spares();
}

void AsyncSaver::finish_removals() {
  COAT_ARG_CHECK(!pending_, "AsyncSaver", "finish_removals while the save of step ", pending_ ? pending_->snapshot.step : 0,
                 " is in flight");
  if (const std::string failed = remove_unused_spares(); !failed.empty()) {
    throw IoError(detail::concat("an unused spare checkpoint file could not be deleted: ", failed,
                                 " (the next start removes it)"));
  }
  wait_for_removals();
  const fs::path kept = std::exchange(recycle_dir_, fs::path());
  if (kept.empty() || (world_ && world_->rank() != 0)) return;
  try {
    io::remove_retired_checkpoint(kept);
  } catch (const std::exception& e) {
    throw retired_not_deleted(e);
  }
}

void AsyncSaver::remove_in_background(std::vector<fs::path> retired, fs::path keep_rank_files_of) {
  wait_for_removals();
  if (retired.empty() && keep_rank_files_of.empty()) return;
  const auto remove_all = [retired, keep_rank_files_of] {
    for (const fs::path& trash : retired) io::remove_retired_checkpoint(trash);
    if (!keep_rank_files_of.empty()) io::remove_retired_checkpoint(keep_rank_files_of, /*keep_rank_files=*/true);
  };
  auto done = std::make_shared<std::promise<void>>();
  try {
    std::shared_future<void> removed = done->get_future().share();
    remover_ = std::thread([this, done, remove_all] {
      try {
        remove_all();
      } catch (const std::exception& e) {
        remove_error_ = std::make_exception_ptr(retired_not_deleted(e));
      }
      done->set_value();
    });
    removed_ = std::move(removed);
  } catch (const std::system_error&) {
    remove_all();  // no thread: delete here
  }
}

void AsyncSaver::reserve_in_background(const std::vector<std::pair<std::string, Tensor>>& tensors,
                                       std::function<void(uint64_t, double)> on_done) {
  COAT_ARG_CHECK(buffers_.empty() && !reserver_.joinable() && !pending_, "AsyncSaver",
                 "reserve_in_background after the buffers were made or a save started");
  struct Spec {
    std::string name;
    Shape shape;
    DType dtype;
  };
  std::vector<Spec> specs;
  reserving_bytes_ = 0;
  for (const auto& [name, t] : tensors) {
    specs.push_back({name, t.shape(), t.dtype()});
    reserving_bytes_ += t.nbytes();
  }
  // Before any page is touched: more than the machine has is an error now, not the OOM killer later.
  check_host_memory_fits(reserving_bytes_, available_host_bytes(),
                         "checkpoint.async (a host copy of this rank's masters and optimizer states for the saves "
                         "in the background)",
                         "set checkpoint.async = false to save without it (training then waits for each write)");
  reserver_ = std::thread([this, specs = std::move(specs), on_done = std::move(on_done)] {
    const auto started = Clock::now();
    try {
      std::vector<std::pair<std::string, Tensor>> made;
      made.reserve(specs.size());
      for (const Spec& s : specs)
        made.emplace_back(s.name, Tensor::empty(host_, s.shape, s.dtype, MemoryCategory::CheckpointSnapshot));
      reserved_ = std::move(made);
      if (on_done) on_done(reserving_bytes_, seconds_since(started));
    } catch (...) {
      reserve_error_ = std::current_exception();
    }
  });
}

void AsyncSaver::wait_reserved() {
  if (!reserver_.joinable()) return;
  reserver_.join();
  if (reserve_error_) {
    std::exception_ptr error = std::exchange(reserve_error_, nullptr);
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      throw IoError(detail::concat("[checkpoint.async] could not allocate the ",
                                   models::format_bytes(static_cast<double>(reserving_bytes_)),
                                   " of host memory for the snapshots: ", e.what(),
                                   " (set checkpoint.async=false to save without them)"));
    }
  }
  buffers_ = std::move(reserved_);
  reserved_.clear();
}

uint64_t AsyncSaver::host_bytes() const {
  if (reserver_.joinable()) return reserving_bytes_;
  uint64_t bytes = 0;
  for (const auto& [name, t] : buffers_) bytes += t.nbytes();
  return bytes;
}

const std::vector<std::pair<std::string, Tensor>>& AsyncSaver::buffers_like(
    const std::vector<std::pair<std::string, Tensor>>& tensors) {
  wait_reserved();
  if (buffers_.empty()) {
    buffers_.reserve(tensors.size());
    for (const auto& [name, t] : tensors) {
      buffers_.emplace_back(name,
                            Tensor::empty(host_, t.shape(), t.dtype(), MemoryCategory::CheckpointSnapshot));
    }
    return buffers_;
  }
  COAT_ARG_CHECK(buffers_.size() == tensors.size(), "AsyncSaver", "a snapshot of ", tensors.size(),
                 " tensors but the buffers were made for ", buffers_.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& b = buffers_[i].second;
    const Tensor& t = tensors[i].second;
    COAT_ARG_CHECK(buffers_[i].first == tensors[i].first && b.shape() == t.shape() && b.dtype() == t.dtype(),
                   "AsyncSaver", "snapshot tensor ", i, " is '", tensors[i].first, "' ",
                   dtype_name(t.dtype()), " ", shape_str(t.shape()), " but its buffer was made for '",
                   buffers_[i].first, "' ", dtype_name(b.dtype()), " ", shape_str(b.shape()));
  }
  return buffers_;
}

SaveStarted AsyncSaver::start(CheckpointSnapshot snapshot) {
  COAT_ARG_CHECK(!pending_, "AsyncSaver", "the save of step ", pending_ ? pending_->snapshot.step : 0,
                 " is still in flight; finish() it before starting the save of step ", snapshot.step);
  const auto started = Clock::now();
  stage_checkpoint_collectively(run_dir_, snapshot.step, world_, context_);
  // The copy is ordered after the step's updates on the device's stream and returns when the bytes are in
  // host memory: from here on training may change the live state.
  const auto& buffers = buffers_like(snapshot.tensors);
  SaveStarted out{snapshot.step, 0.0, 0};
  for (size_t i = 0; i < buffers.size(); ++i) {
    Tensor host = buffers[i].second;
    io::copy_bits(host, snapshot.tensors[i].second);
    snapshot.tensors[i].second = host;
    out.snapshot_bytes += host.nbytes();
  }
  out.snapshot_s = seconds_since(started);
  // The file this save overwrites: its rank's file of the newest retired checkpoint, else a spare.
  fs::path recycle;
  std::shared_future<void> spare_ready;
  if (snapshot.file && !recycle_dir_.empty()) {
    recycle = recycle_dir_ / io::checkpoint_rank_file_name(*snapshot.file);
  } else if (snapshot.file && next_spare_ < spare_files_.size()) {
    recycle = spare_files_[next_spare_];
    spare_ready = spare_ready_[next_spare_++];
    spent_spare_dir_ = recycle.parent_path();
  }
  Pending& p = pending_.emplace();
  p.snapshot = std::move(snapshot);
  p.snapshot_s = out.snapshot_s;
  try {
    p.writer = std::thread([this, &p, removed = removed_, recycle, spare_ready] {
      // The old checkpoints the last commit retired are gone first: their space may be what this file needs.
      if (removed.valid()) removed.wait();
      if (spare_ready.valid()) spare_ready.wait();
      // Only this rank's file and the host buffers: no device, stream or communicator is used here.
      p.result = write_rank_file(run_dir_, p.snapshot, writer_, recycle);
      p.done.store(true, std::memory_order_release);
    });
  } catch (const std::system_error& e) {
    // No thread: the write is reported failed at the commit, as any other failed write.
    p.result.error = std::current_exception();
    p.result.message = detail::concat("could not start the background writer: ", e.what());
    p.done.store(true, std::memory_order_release);
  }
  return out;
}

std::optional<SaveCommitted> AsyncSaver::poll() {
  if (!pending_) return std::nullopt;
  const auto started = Clock::now();
  const std::vector<int64_t> done = dist::all_gather_values(world_, context_, {written() ? 1 : 0});
  for (const int64_t d : done) {
    if (d == 0) return std::nullopt;
  }
  return commit(seconds_since(started));
}

std::optional<SaveCommitted> AsyncSaver::finish() {
  if (!pending_) return std::nullopt;
  const auto started = Clock::now();
  if (pending_->writer.joinable()) pending_->writer.join();
  return commit(seconds_since(started));
}

void AsyncSaver::abandon() noexcept {
  if (!pending_) return;
  if (pending_->writer.joinable()) pending_->writer.join();
  const int64_t step = pending_->snapshot.step;
  pending_.reset();
  remove_spent_spare();
  if (!world_ || world_->rank() == 0) io::abandon_checkpoint(run_dir_, step);
}

SaveCommitted AsyncSaver::commit(double waited_s) {
  const auto started = Clock::now();
  if (pending_->writer.joinable()) pending_->writer.join();
  remove_spent_spare();  // the writer took its file (or failed, which removed it)
  SaveCommitted out;
  out.step = pending_->snapshot.step;
  out.snapshot_s = pending_->snapshot_s;
  std::vector<fs::path> retired;  // pruned by rank 0's commit, deleted off this thread
  try {
    const CommittedCheckpoint c = commit_checkpoint_collectively(
        run_dir_, pending_->snapshot, pending_->result, world_, context_, keep_last_, &retired);
    out.dir = c.dir;
    out.bytes = c.bytes;
    out.write_s = c.write_s;
  } catch (const std::exception& e) {
    // The save is over: a failure on any rank has removed its staging directory.
    pending_.reset();
    throw IoError(detail::concat("checkpoint of step ", out.step,
                                 ", written in the background while training went on, failed: ", e.what(),
                                 ". The checkpoints already complete are untouched"));
  }
  pending_.reset();
  // The newest retired checkpoint's rank files are the next save's (every rank learns which directory); the
  // rest, and the checkpoint recycled until now (its files taken by the writers just committed), go.
  const bool root = !world_ || world_->rank() == 0;
  fs::path recycle = retired.empty() ? fs::path() : retired.front();
  if (world_) recycle = dist::broadcast_text(world_, context_, recycle.string(), 0);
  if (!retired.empty()) retired.erase(retired.begin());
  if (!recycle_dir_.empty() && root) retired.push_back(recycle_dir_);
  recycle_dir_ = recycle;
  out.commit_s = waited_s + seconds_since(started);
  remove_in_background(std::move(retired), root ? recycle : fs::path());
  return out;
}

}  // namespace coat::train
