// Saving a checkpoint over every rank of a run: rank 0 stages, each rank that holds slices writes its own
// file, all report, and rank 0 commits (meta.json, COMPLETE, rename) only when every rank's file is written
// and checksummed, or removes the staging directory when any failed; every rank learns the outcome and a
// failure throws on all of them. The three steps are separate so that a background writer (async_saver.h)
// can write a host copy taken at a step boundary while training goes on, and join the commit later: only
// the stage and the commit are collective, and they run on the training thread.
#pragma once

#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "coat/core/context.h"
#include "coat/core/tensor.h"
#include "coat/dist/communicator.h"
#include "coat/io/checkpoint.h"
#include "coat/io/checkpoint_layout.h"

namespace coat::train {

/// One rank's part of a save.
struct CheckpointSnapshot {
  int64_t step = 0;
  nlohmann::json meta;          ///< the same on every rank; rank 0's is written
  io::CheckpointLayout layout;  ///< the same on every rank
  std::optional<int>
      file;  ///< this rank's rank file; nullopt: it writes none (a replica under hybrid sharding)
  std::vector<std::pair<std::string, Tensor>>
      tensors;  ///< this rank's slices (views of live state, or host copies)
};

/// How a rank's file is written into the staging directory: io::write_checkpoint_rank (tests pass one that
/// fails or waits). `recycle`: an old rank file to overwrite in place (io::write_checkpoint_rank), or empty.
using RankFileWriter = std::function<io::RankFileRecord(
    const std::filesystem::path& staging_dir, int file, const std::vector<std::pair<std::string, Tensor>>& tensors,
    const std::filesystem::path& recycle)>;

/// io::write_checkpoint_rank on `io_threads` threads (checkpoint.io_threads): the writer saves use.
RankFileWriter rank_file_writer(int io_threads);

/// What a rank's write came to: reported to every rank at the commit, never thrown where it happened (the
/// writer may be a background thread).
struct RankWrite {
  std::exception_ptr error;  ///< the failure as thrown (rethrown on this rank at the commit); null: written
  std::string message;       ///< the failure's what()
  io::RankFileRecord record;
  double seconds = 0.0;  ///< writing and syncing the file
  bool ok() const { return error == nullptr; }
};

/// A committed checkpoint.
struct CommittedCheckpoint {
  std::filesystem::path dir;
  uint64_t bytes = 0;    ///< of every rank file
  double write_s = 0.0;  ///< the slowest rank's write (RankWrite::seconds)
};

/// Step 1, collective: rank 0 stages the save of `step` (io::begin_checkpoint). Throws on every rank when it
/// failed: InvalidArgument when a complete checkpoint of the step exists, IoError otherwise.
void stage_checkpoint_collectively(const std::filesystem::path& run_dir, int64_t step,
                                   dist::Communicator* world, const ContextPtr& context);
/// Step 2, this rank alone (any thread; it touches only its own file): writes the snapshot's file, if it has
/// one, into the staging directory, overwriting `recycle` in place where given (an old rank file). Never
/// throws: a failure is in the result.
RankWrite write_rank_file(const std::filesystem::path& run_dir, const CheckpointSnapshot& snapshot,
                          const RankFileWriter& writer, const std::filesystem::path& recycle = {}) noexcept;
/// Step 3, collective: every rank reports `written`; rank 0 commits (io::finish_checkpoint) when all files
/// were written, else removes the staging directory, and every rank learns which. Throws IoError on every
/// rank when any part failed, naming the rank and its error (on the failing rank its own exception).
/// `retired` (optional, used on rank 0): the pruned checkpoints are renamed and listed there for the caller to
/// delete (io::finish_checkpoint), instead of deleted here.
CommittedCheckpoint commit_checkpoint_collectively(const std::filesystem::path& run_dir,
                                                   const CheckpointSnapshot& snapshot,
                                                   const RankWrite& written, dist::Communicator* world,
                                                   const ContextPtr& context, int keep_last,
                                                   std::vector<std::filesystem::path>* retired = nullptr);

/// The three steps at once: saves `snapshot` collectively over `world` (null: one process) and returns the
/// checkpoint directory. Every rank calls it; `context` is where the small agreement tensors live (the
/// communicator's device). Throws IoError on every rank when any part failed, naming the rank and its error;
/// nothing is then left in the checkpoints directory. InvalidArgument (before anything is written) when a
/// complete checkpoint of the step exists.
CommittedCheckpoint save_checkpoint_collectively(
    const std::filesystem::path& run_dir, const CheckpointSnapshot& snapshot, dist::Communicator* world,
    const ContextPtr& context, int keep_last,
    const RankFileWriter& writer = rank_file_writer(io::default_io_threads()));

}  // namespace coat::train
