// Checkpoints saved while training goes on (checkpoint.async): at a save step the training thread stages the
// save (collective), copies this rank's slices of the masters and optimizer states into host buffers (the
// only time training waits: pinned memory under CUDA, ops::host_staging_context) and hands them to a
// background thread that writes the rank file. The commit is collective, so it stays on the training thread:
// at a step boundary poll() asks every rank whether its write is done (one small all-gather per step while a
// save is in flight) and, when all are, commits; the next save and the end of the run wait for it (finish()).
// A failed write throws at that commit, on every rank, and nothing already complete is touched.
//
// Memory: the host buffers hold a copy of everything the rank writes (its masters and optimizer states: about
// 39 GiB for Llama-2-7B with fp8_expand states on one GPU). They are allocated once, at the first save or by
// reserve_in_background(), and reused by every save of the run. The trainer reserves them on a thread of
// their own (the first save waits for it if it is still pinning), after checking that the machine has that
// much host memory available. With cudaHostAlloc, pinning 39 GiB took 23.4 s on an H200 host and the
// training thread's CUDA calls waited for it; the pinned allocator now faults the pages in from several
// threads and only then registers them (cuda/pinned_host.cpp: 8 GiB in 0.49 s on an H100).
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "coat/core/context.h"
#include "coat/core/tensor.h"
#include "coat/dist/communicator.h"
#include "coat/train/checkpoint_save.h"

namespace coat::train {

/// What starting a save cost the training thread (this rank's figures).
struct SaveStarted {
  int64_t step = 0;
  double snapshot_s = 0.0;      ///< staging and the copy into host buffers
  uint64_t snapshot_bytes = 0;  ///< the host copy
};

/// A save that is complete on disk.
struct SaveCommitted {
  int64_t step = 0;  ///< the checkpoint's
  std::filesystem::path dir;
  uint64_t bytes = 0;       ///< every rank file
  double snapshot_s = 0.0;  ///< what its start blocked training for (SaveStarted::snapshot_s)
  double write_s = 0.0;     ///< the slowest rank's write (file, sync, read-back checksum)
  double commit_s = 0.0;    ///< training blocked at the commit: waiting for the writers, then committing
  bool background = true;   ///< written by the background thread (false: a synchronous save, all in commit_s)
  /// "checkpoint step 3 saved to DIR: training blocked 0.420 s (snapshot) + 0.010 s (commit), written in the
  /// background in 12.300 s (35.48 GiB, 3.10 GB/s)".
  std::string describe() const;
};

class AsyncSaver {
 public:
  /// `context`: where the agreement tensors live (the communicator's device); `host`: where the snapshot
  /// buffers are allocated (ops::host_staging_context of the training context). `world` null: one process.
  AsyncSaver(std::filesystem::path run_dir, dist::Communicator* world, ContextPtr context, ContextPtr host,
             int keep_last, RankFileWriter writer = rank_file_writer(io::default_io_threads()));
  /// Waits for the writer. A save not committed stays a staging directory (removed at the next start).
  ~AsyncSaver();
  AsyncSaver(const AsyncSaver&) = delete;
  AsyncSaver& operator=(const AsyncSaver&) = delete;

  /// Allocates the host buffers for `tensors` (a snapshot's, or views like them) on a thread of its own
  /// rather than at the first save: returns at once; `on_done(bytes, seconds)` is called on that thread
  /// when the buffers are allocated. The first save (and the destructor) waits for it; an allocation that
  /// failed throws there (IoError naming the bytes and the error). More bytes than the host has available
  /// throw here, at once (OutOfMemory, check_host_memory_fits). Call at most once, before any save.
  void reserve_in_background(const std::vector<std::pair<std::string, Tensor>>& tensors,
                             std::function<void(uint64_t, double)> on_done = {});
  /// Reserves `count` spare rank files of `bytes` for this rank's file `file` (io::reserve_spare_rank_file) on
  /// a thread of its own, one after the other, for the first saves of the run: they have no retired
  /// checkpoint to overwrite yet, and writing tens of GB into newly allocated space was the slow part of
  /// them (2.0 GB/s into fresh tmpfs pages on an H100 machine, against 3.3-4.9 GB/s over a retired file).
  /// Save i (i < count) overwrites spare i once it is reserved; spares left over are deleted by
  /// finish_removals. A spare that cannot be reserved (a full disk) ends the reservation: `on_done(reserved,
  /// seconds, error)` is called on that thread with the message, and the saves then write new files as
  /// before. Does nothing where spares were planned already, a save is in flight or a retired file waits.
  void reserve_spares_in_background(int count, int rank, int file, uint64_t bytes,
                                    std::function<void(int, double, const std::string&)> on_done = {});
  /// Host bytes held by the snapshot buffers (or being reserved).
  uint64_t host_bytes() const;

  /// Collective. Stages `snapshot.step`, copies the snapshot's tensors (views of live state) into the host
  /// buffers and starts the background write. A save still in flight must be finished first (finish()):
  /// InvalidArgument otherwise. Throws like stage_checkpoint_collectively.
  SaveStarted start(CheckpointSnapshot snapshot);
  /// Whether a save was started and not yet committed or failed.
  bool pending() const { return pending_.has_value(); }
  /// Collective, non-blocking where the writers are still busy: when every rank's write is done, commits and
  /// returns the save; nullopt when none is pending or some rank is still writing. A failed write or commit
  /// throws IoError on every rank naming the checkpoint, the rank and its error (the file and the OS error),
  /// and the save is dropped (its staging directory removed).
  std::optional<SaveCommitted> poll();
  /// Collective: waits for this rank's write and commits (nullopt when none is pending). Throws as poll().
  std::optional<SaveCommitted> finish();
  /// Drops the save in flight without committing, after its writer is done; no communication (for a run that
  /// failed: rank 0 removes the staging directory, or the next start does).
  void abandon() noexcept;
  /// Waits until the old checkpoints retired by the commits so far are deleted. They are deleted by a thread
  /// of their own, so that a commit (which prunes to keep_last) does not hold training while tens of GB are
  /// freed (2.2 s for a 41.7 GB checkpoint on an H100 machine's tmpfs); the next save's writer waits for that
  /// deletion before it reserves its file's space. IoError naming the directory when a deletion failed (its
  /// `.trash` directory stays, and the next start removes it).
  ///
  /// Recycling: the rank files of the newest retired checkpoint are not deleted but overwritten in place by
  /// the next save's writers (each rank its own file: io::write_checkpoint_rank's `recycle`), so that a save
  /// neither frees nor allocates tens of GB; the rest of that checkpoint is deleted at once, and what is left
  /// of it at the next commit. Rank 0 retires and deletes; every rank learns the directory at the commit.
  void wait_for_removals();
  /// The end of a run: deletes the rank files kept for recycling (rank 0) and waits for every deletion;
  /// throws as wait_for_removals. No save may be in flight.
  void finish_removals();
  /// After a failure: waits for the spare reservation and deletes the spares no save took, ignoring errors
  /// (what is left is trash, which the next start removes). The destructor does it too.
  void drop_unused_spares() noexcept;
  /// The retired checkpoint whose rank files the next save overwrites (empty: none).
  const std::filesystem::path& recycle_dir() const { return recycle_dir_; }
  /// This rank's write is done (or none is pending); no communication.
  bool written() const { return !pending_ || pending_->done.load(std::memory_order_acquire); }

 private:
  /// A save in flight: its snapshot of host buffers and the writer thread.
  struct Pending {
    CheckpointSnapshot snapshot;
    double snapshot_s = 0.0;
    RankWrite result;  ///< set by the writer before `done`
    std::atomic<bool> done{false};
    std::thread writer;
  };
  /// Joins the background reservation, if any, and takes its buffers (rethrows its failure).
  void wait_reserved();
  /// Host buffers like `tensors`, allocated at the first call and reused (InvalidArgument when the tensors
  /// changed shape or dtype since).
  const std::vector<std::pair<std::string, Tensor>>& buffers_like(
      const std::vector<std::pair<std::string, Tensor>>& tensors);
  /// Collective: commits the pending save (its writer joined) and clears it.
  SaveCommitted commit(double waited_s);
  /// Starts deleting `retired` and all but the rank files of `keep_rank_files_of` (empty: none) on remover_,
  /// after waiting for the previous removal (rethrows its failure).
  void remove_in_background(std::vector<std::filesystem::path> retired, std::filesystem::path keep_rank_files_of);

  std::filesystem::path run_dir_;
  dist::Communicator* world_;
  ContextPtr context_;
  ContextPtr host_;
  int keep_last_;
  RankFileWriter writer_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::optional<Pending> pending_;
  // The background reservation: its thread fills reserved_ (or reserve_error_), read after the join.
  std::thread reserver_;
  std::vector<std::pair<std::string, Tensor>> reserved_;
  std::exception_ptr reserve_error_;
  uint64_t reserving_bytes_ = 0;
  // The deletion of retired checkpoints (remove_in_background): its failure is read after the join.
  std::thread remover_;
  std::exception_ptr remove_error_;
  std::shared_future<void> removed_;  ///< ready when remover_ is done (the next writer waits for it)
  std::filesystem::path recycle_dir_;  ///< the retired checkpoint whose rank files the next writers take
  // Spare rank files (reserve_spares_in_background): paths, each ready when reserved (or given up), and the
  // next one to use; the directory of the one the save in flight took, deleted at its commit.
  std::thread spare_thread_;
  std::vector<std::filesystem::path> spare_files_;
  std::vector<std::shared_future<void>> spare_ready_;
  size_t next_spare_ = 0;
  std::filesystem::path spent_spare_dir_;
  /// Deletes the directory of the spare the last save took, if any (it is empty by then).
  void remove_spent_spare() noexcept;
  /// Waits for the spare reservation and deletes the spares no save took; the first failure ("dir: error"),
  /// or empty.
  std::string remove_unused_spares() noexcept;
};

}  // namespace coat::train
