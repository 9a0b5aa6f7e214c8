// The collective save: stage (rank 0), write (each rank with a file), report, commit or abandon (rank 0),
// learn the outcome (all).
#include "coat/train/checkpoint_save.h"

#include <algorithm>
#include <chrono>
#include <exception>

#include "coat/core/error.h"
#include "coat/dist/host_collectives.h"
#include "coat/io/checkpoint.h"

namespace coat::train {
namespace {

namespace fs = std::filesystem;

struct Outcome {
  bool ok = true;
  std::string message;
  std::exception_ptr error;  ///< this rank's own exception, rethrown as it is
};

/// Runs `work`, catching its failure.
template <typename Work>
Outcome attempt(Work&& work) {
  Outcome o;
  try {
    work();
  } catch (const std::exception& e) {
    o = {false, e.what(), std::current_exception()};
  }
  return o;
}

/// Rank `root`'s outcome on every rank; throws there with its message, on `root` its own exception.
void share_outcome(dist::Communicator* world, const ContextPtr& context, const Outcome& mine, int root,
                   const std::string& what) {
  const int rank = world ? world->rank() : 0;
  const bool ok = dist::broadcast_values(world, context, {mine.ok ? 1 : 0}, root)[0] != 0;
  if (ok) return;
  const std::string message = dist::broadcast_text(world, context, mine.message, root);
  if (rank == root && mine.error) std::rethrow_exception(mine.error);
  throw IoError(detail::concat(what, " failed on rank ", root, ": ", message));
}

/// The rank files' records in file order, with the total bytes and the slowest write.
struct Reports {
  std::vector<io::RankFileRecord> files;
  uint64_t bytes = 0;
  double write_s = 0.0;
};

/// Every rank's report {failed, file, bytes, crc32c, write microseconds}; the records of the layout's files,
/// or a throw (after rank 0 removed the staging directory) naming the first rank that failed.
Reports gather_reports(const fs::path& run_dir, const CheckpointSnapshot& snapshot, dist::Communicator* world,
                       const ContextPtr& context, const RankWrite& written) {
  constexpr size_t kFields = 5;
  const int rank = world ? world->rank() : 0, ranks = world ? world->world_size() : 1;
  const std::vector<int64_t> reports = dist::all_gather_values(
      world, context,
      {written.ok() ? 0 : 1, snapshot.file.value_or(-1), static_cast<int64_t>(written.record.bytes),
       written.record.crc32c, static_cast<int64_t>(written.seconds * 1e6)});
  Reports out;
  out.files.resize(snapshot.layout.files.size());
  std::vector<int> reported(out.files.size(), 0);
  for (int r = 0; r < ranks; ++r) {
    const int64_t* report = &reports[static_cast<size_t>(r) * kFields];
    if (report[0] != 0) {
      if (rank == 0) io::abandon_checkpoint(run_dir, snapshot.step);
      const std::string message = dist::broadcast_text(world, context, written.message, r);
      if (rank == r && written.error) std::rethrow_exception(written.error);
      throw IoError(detail::concat("checkpoint of step ", snapshot.step, ": rank ", r,
                                   " could not write its file (", message, "); nothing was saved"));
    }
    if (report[1] < 0) continue;
    const size_t f = static_cast<size_t>(report[1]);
    COAT_CHECK(f < out.files.size(), Error, "[checkpoint] rank ", r, " wrote file ", f, " of ",
               out.files.size());
    out.files[f] = {static_cast<uint64_t>(report[2]), static_cast<uint32_t>(report[3])};
    out.bytes += static_cast<uint64_t>(report[2]);
    out.write_s = std::max(out.write_s, static_cast<double>(report[4]) * 1e-6);
    ++reported[f];
  }
  for (size_t f = 0; f < out.files.size(); ++f) {
    COAT_CHECK(reported[f] == 1, Error, "[checkpoint] rank file ", f, " was written by ", reported[f],
               " ranks");
  }
  return out;
}

}  // namespace

RankFileWriter rank_file_writer(int io_threads) {
  io::check_io_threads(io_threads, "rank_file_writer");
  return [io_threads](const fs::path& staging_dir, int file,
                      const std::vector<std::pair<std::string, Tensor>>& tensors, const fs::path& recycle) {
    return io::write_checkpoint_rank(staging_dir, file, tensors, io_threads, recycle);
  };
}

void stage_checkpoint_collectively(const fs::path& run_dir, int64_t step, dist::Communicator* world,
                                   const ContextPtr& context) {
  const int rank = world ? world->rank() : 0;
  share_outcome(world, context, rank == 0 ? attempt([&] { io::begin_checkpoint(run_dir, step); }) : Outcome{},
                0, detail::concat("checkpoint of step ", step));
}

RankWrite write_rank_file(const fs::path& run_dir, const CheckpointSnapshot& snapshot,
                          const RankFileWriter& writer, const fs::path& recycle) noexcept {
  RankWrite written;
  if (!snapshot.file) return written;
  const auto started = std::chrono::steady_clock::now();
  try {
    written.record =
        writer(io::checkpoint_staging_dir(run_dir, snapshot.step), *snapshot.file, snapshot.tensors, recycle);
  } catch (const std::exception& e) {
    written.error = std::current_exception();
    written.message = e.what();
  } catch (...) {
    written.error = std::current_exception();
    written.message = "an exception of unknown type";
  }
  written.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return written;
}

CommittedCheckpoint commit_checkpoint_collectively(const fs::path& run_dir,
                                                   const CheckpointSnapshot& snapshot,
                                                   const RankWrite& written, dist::Communicator* world,
                                                   const ContextPtr& context, int keep_last,
                                                   std::vector<fs::path>* retired) {
  const int rank = world ? world->rank() : 0;
  // All report; any failure abandons the save on every rank.
  const Reports reports = gather_reports(run_dir, snapshot, world, context, written);
  // Rank 0 commits, or removes the staging directory; everyone learns which.
  CommittedCheckpoint done{io::checkpoints_root(run_dir) / io::checkpoint_dir_name(snapshot.step),
                           reports.bytes, reports.write_s};
  Outcome committed;
  if (rank == 0) {
    committed = attempt([&] {
      done.dir = io::finish_checkpoint(run_dir, snapshot.step, snapshot.meta, snapshot.layout, reports.files,
                                       keep_last, retired);
    });
    if (!committed.ok) io::abandon_checkpoint(run_dir, snapshot.step);
  }
  share_outcome(world, context, committed, 0, detail::concat("checkpoint of step ", snapshot.step));
  return done;
}

CommittedCheckpoint save_checkpoint_collectively(const fs::path& run_dir, const CheckpointSnapshot& snapshot,
                                                 dist::Communicator* world, const ContextPtr& context,
                                                 int keep_last, const RankFileWriter& writer) {
  // Rank 0 stages; nobody writes before the staging directory exists.
  stage_checkpoint_collectively(run_dir, snapshot.step, world, context);
  const RankWrite written = write_rank_file(run_dir, snapshot, writer);
  return commit_checkpoint_collectively(run_dir, snapshot, written, world, context, keep_last);
}

}  // namespace coat::train
