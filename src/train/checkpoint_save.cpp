// The collective save: stage (rank 0), write (each rank with a file), report, commit or abandon (rank 0),
// learn the outcome (all).
#include "coat/train/checkpoint_save.h"

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

/// Every rank's report {failed, file, bytes, crc32c}; the records of the layout's files in file order, or a
/// throw (after rank 0 removed the staging directory) naming the first rank that failed.
std::vector<io::RankFileRecord> gather_reports(const fs::path& run_dir, const CheckpointSnapshot& snapshot,
                                               dist::Communicator* world, const ContextPtr& context,
                                               const Outcome& written, const io::RankFileRecord& record) {
  const int rank = world ? world->rank() : 0, ranks = world ? world->world_size() : 1;
  const std::vector<int64_t> reports = dist::all_gather_values(
      world, context,
      {written.ok ? 0 : 1, snapshot.file.value_or(-1), static_cast<int64_t>(record.bytes), record.crc32c});
  std::vector<io::RankFileRecord> files(snapshot.layout.files.size());
  std::vector<int> reported(files.size(), 0);
  for (int r = 0; r < ranks; ++r) {
    const int64_t* report = &reports[static_cast<size_t>(r) * 4];
    if (report[0] != 0) {
      if (rank == 0) io::abandon_checkpoint(run_dir, snapshot.step);
      const std::string message = dist::broadcast_text(world, context, written.message, r);
      if (rank == r && written.error) std::rethrow_exception(written.error);
      throw IoError(detail::concat("checkpoint of step ", snapshot.step, ": rank ", r,
                                   " could not write its file (", message, "); nothing was saved"));
    }
    if (report[1] < 0) continue;
    const size_t f = static_cast<size_t>(report[1]);
    COAT_CHECK(f < files.size(), Error, "[checkpoint] rank ", r, " wrote file ", f, " of ", files.size());
    files[f] = {static_cast<uint64_t>(report[2]), static_cast<uint32_t>(report[3])};
    ++reported[f];
  }
  for (size_t f = 0; f < files.size(); ++f) {
    COAT_CHECK(reported[f] == 1, Error, "[checkpoint] rank file ", f, " was written by ", reported[f],
               " ranks");
  }
  return files;
}

}  // namespace

fs::path save_checkpoint_collectively(const fs::path& run_dir, const CheckpointSnapshot& snapshot,
                                      dist::Communicator* world, const ContextPtr& context, int keep_last) {
  const int rank = world ? world->rank() : 0;
  const std::string what = detail::concat("checkpoint of step ", snapshot.step);
  // 1. Rank 0 stages; nobody writes before the staging directory exists.
  fs::path staging = io::checkpoint_staging_dir(run_dir, snapshot.step);
  share_outcome(world, context,
                rank == 0 ? attempt([&] { io::begin_checkpoint(run_dir, snapshot.step); }) : Outcome{}, 0,
                what);
  // 2. Each rank with slices writes its file and reads it back for its checksum.
  io::RankFileRecord record;
  const Outcome written = attempt([&] {
    if (snapshot.file) record = io::write_checkpoint_rank(staging, *snapshot.file, snapshot.tensors);
  });
  // 3. All report; any failure abandons the save on every rank.
  const std::vector<io::RankFileRecord> files =
      gather_reports(run_dir, snapshot, world, context, written, record);
  // 4. Rank 0 commits, or removes the staging directory; everyone learns which.
  fs::path dir = io::checkpoints_root(run_dir) / io::checkpoint_dir_name(snapshot.step);
  Outcome committed;
  if (rank == 0) {
    committed = attempt([&] {
      dir = io::finish_checkpoint(run_dir, snapshot.step, snapshot.meta, snapshot.layout, files, keep_last);
    });
    if (!committed.ok) io::abandon_checkpoint(run_dir, snapshot.step);
  }
  share_outcome(world, context, committed, 0, what);
  return dir;
}

}  // namespace coat::train
