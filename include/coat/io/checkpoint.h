// Checkpoint directories of a run: `<run>/checkpoints/step_00001000/` holding
//   meta.json        the caller's JSON object (resolved config, tokens seen, sampler and RNG state, ...)
//                    with "format_version", "step" and "world_size" added; format 2 adds "layout"
//                    (checkpoint_layout.h: the units and the slice of every unit each rank file holds)
//   rank_00000.bin   one tensor file (tensor_file.h) per rank that holds slices, each tensor checksummed
//   COMPLETE         the completion marker and manifest (checkpoint_manifest.h): the size and CRC-32C of
//                    meta.json and of every rank file
// Formats: 1, one file of named tensors in one process's layout (save_checkpoint: imports, tests, and every
// checkpoint of earlier versions); 2, the trainer's, one file per rank with its slices of every flat unit
// (begin_checkpoint / write_checkpoint_rank / finish_checkpoint). CheckpointReader reads both.
//
// The commit order: everything is written into the staging directory `step_00001000.tmp/` (each file synced),
// COMPLETE last, the staging directory synced and renamed to its final name, the parent synced. The rename is
// the commit: a `step_<digits>` directory holds a whole checkpoint, a crash before it leaves only a staging
// directory. Pruning renames a doomed checkpoint to `step_<digits>.trash` before deleting it, and a damaged
// one is renamed `step_<digits>.corrupt` (kept for inspection): neither name is ever listed, loaded or
// pruned. remove_checkpoint_leftovers clears what a crash left (staging, trash, directories without
// COMPLETE).
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "coat/core/tensor.h"
#include "coat/io/checkpoint_layout.h"
#include "coat/io/parallel_io.h"
#include "coat/io/tensor_file.h"

namespace coat::io {

/// The newest format this build writes (2); it reads 1 and 2.
inline constexpr int kCheckpointFormatVersion = 2;

/// "step_00001000" (at least 8 digits).
std::string checkpoint_dir_name(int64_t step);
/// "rank_00000.bin".
std::string checkpoint_rank_file_name(int rank);
/// `<run_dir>/checkpoints`.
std::filesystem::path checkpoints_root(const std::filesystem::path& run_dir);
/// `<run_dir>/checkpoints/step_<step>.tmp`: where a save of `step` is staged.
std::filesystem::path checkpoint_staging_dir(const std::filesystem::path& run_dir, int64_t step);

struct CheckpointInfo {
  int64_t step = 0;
  std::filesystem::path dir;
  bool complete = false;  ///< has its COMPLETE marker
};

/// The `step_<digits>` directories under `<run_dir>/checkpoints`, complete or not, sorted by step (staging,
/// trash and corrupt directories are not listed). Empty when there is no checkpoints directory.
std::vector<CheckpointInfo> list_checkpoints(const std::filesystem::path& run_dir);
/// The complete checkpoint with the highest step, if any.
std::optional<CheckpointInfo> latest_complete(const std::filesystem::path& run_dir);
/// A checkpoint directory itself (it holds meta.json), or a run directory (its newest complete checkpoint).
/// IoError naming the path when it is neither.
std::filesystem::path resolve_checkpoint_dir(const std::filesystem::path& path);

/// Saves a format-1 checkpoint (one process, named tensors) and returns its directory. `meta` must be a JSON
/// object (or null); its "step", "world_size" and "format_version", when present, must agree with what is
/// saved. `keep_last` > 0 then prunes the oldest complete checkpoints so that `keep_last` remain, never the
/// one just written (0 keeps all). Throws InvalidArgument when a complete checkpoint of this step exists
/// already (it is never overwritten); an incomplete directory of this step is replaced. A failure leaves
/// nothing behind.
std::filesystem::path save_checkpoint(const std::filesystem::path& run_dir, int64_t step,
                                      const nlohmann::json& meta,
                                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                                      int keep_last = 0, int io_threads = default_io_threads());

/// What a rank reports of the file it wrote: its size and the CRC-32C of all its bytes (combined from the
/// checksums of the pieces written).
struct RankFileRecord {
  uint64_t bytes = 0;
  uint32_t crc32c = 0;
};

/// Format-2 save, step 1 (rank 0): checks that no complete checkpoint of `step` exists, replaces any stale
/// staging directory, and returns the (empty) staging directory.
std::filesystem::path begin_checkpoint(const std::filesystem::path& run_dir, int64_t step);
/// Step 2 (every rank that holds slices; it touches nothing but its own file, so it may run on a background
/// thread from a host snapshot): writes `rank_<file>.bin` into the staging directory (synced) on io_threads
/// threads (write_tensor_file), with the CRC-32C of all its bytes. `recycle`: an old rank file (of a retired
/// checkpoint) to overwrite in place instead of a new file (TensorFileWriteOptions::recycle), or empty.
RankFileRecord write_checkpoint_rank(const std::filesystem::path& staging_dir, int file,
                                     const std::vector<std::pair<std::string, Tensor>>& tensors,
                                     int io_threads = default_io_threads(),
                                     const std::filesystem::path& recycle = {});
/// Step 3 (rank 0, once every rank reported its file): checks the rank files against the records and the
/// layout (one file per layout file), writes meta.json (with "format_version" 2, "step" and "layout") and
/// COMPLETE, renames the staging directory to its final name, prunes to `keep_last`. Returns the final
/// directory. On failure the caller removes the staging directory (abandon_checkpoint).
/// `retired` (optional): the pruned checkpoints are only renamed out of the checkpoint namespace
/// (`step_N.trash`, the directory synced) and their new paths appended here, for the caller to delete later
/// (remove_retired_checkpoint; a background saver deletes tens of GB off the training thread). A crash before
/// that leaves trash directories, which the next start removes (remove_checkpoint_leftovers).
std::filesystem::path finish_checkpoint(const std::filesystem::path& run_dir, int64_t step,
                                        const nlohmann::json& meta, const CheckpointLayout& layout,
                                        const std::vector<RankFileRecord>& files, int keep_last = 0,
                                        std::vector<std::filesystem::path>* retired = nullptr);
/// Deletes a checkpoint that finish_checkpoint retired (its `.trash` path); IoError naming it when that fails.
/// `keep_rank_files`: deletes everything but its rank files (`rank_NNNNN.bin` at its top), which the next
/// save's writers overwrite in place (write_checkpoint_rank's `recycle`); a later call without it deletes
/// the rest.
void remove_retired_checkpoint(const std::filesystem::path& trash, bool keep_rank_files = false);

/// A rank file reserved ahead of the first saves of a run (a background saver's spare, which a save's writer
/// overwrites in place as it would a retired checkpoint's): `<checkpoints>/spare_<index>_<rank>.trash/
/// rank_<file>.bin`, its space reserved (fallocate) and sized to `bytes`. Out of the checkpoint namespace: a
/// crash leaves a trash directory, which the next start removes. Returns the file's path; IoError naming it
/// (the partial file removed) when the disk cannot hold it.
std::filesystem::path reserve_spare_rank_file(const std::filesystem::path& run_dir, int index, int rank, int file,
                                              uint64_t bytes);
/// The directory reserve_spare_rank_file puts spare `index` of `rank` in.
std::filesystem::path spare_rank_file_dir(const std::filesystem::path& run_dir, int index, int rank);
/// A failed save (rank 0): removes the staging directory of `step`. Never throws; returns false when the
/// removal failed (the directory is then removed at the next start, remove_checkpoint_leftovers).
bool abandon_checkpoint(const std::filesystem::path& run_dir, int64_t step) noexcept;

/// Removes what an interrupted run left in `<run_dir>/checkpoints`: staging (`.tmp`) and trash (`.trash`)
/// directories and `step_<digits>` directories without COMPLETE (from builds that renamed before the marker).
/// Returns the paths removed. Call it only while no other process writes this run (one writer per run dir).
std::vector<std::filesystem::path> remove_checkpoint_leftovers(const std::filesystem::path& run_dir);

/// Renames a damaged checkpoint `step_N` to `step_N.corrupt` (`step_N.corrupt.2`, ... when taken) so that it
/// is never loaded or pruned again, and returns the new path.
std::filesystem::path mark_checkpoint_corrupt(const std::filesystem::path& dir);

}  // namespace coat::io
