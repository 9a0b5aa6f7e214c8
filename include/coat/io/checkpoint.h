// Checkpoint directories of a run: `<run>/checkpoints/step_00001000/` holding
//   meta.json        the caller's JSON object (resolved config, tokens seen, sampler and RNG state, ...)
//                    with "format_version", "step" and "world_size" added
//   rank_00000.bin   one tensor file (tensor_file.h) per rank, with that rank's tensors
//   COMPLETE         the completion marker, written last
// A checkpoint is staged in `step_00001000.tmp/`, synced, renamed to its final name, and only then given
// its COMPLETE marker (itself written atomically, then the directory synced). A directory without the
// marker is an interrupted write: never loaded, never counted, never deleted by pruning.
//
// Single process: save_checkpoint(). Several ranks (FSDP): rank 0 calls begin_checkpoint(), every rank
// writes its file with write_checkpoint_rank() into the returned staging directory, and after a barrier
// rank 0 calls finish_checkpoint().
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "coat/core/tensor.h"
#include "coat/io/tensor_file.h"

namespace coat::io {

inline constexpr int kCheckpointFormatVersion = 1;

/// "step_00001000" (at least 8 digits).
std::string checkpoint_dir_name(int64_t step);
/// "rank_00000.bin".
std::string checkpoint_rank_file_name(int rank);
/// `<run_dir>/checkpoints`.
std::filesystem::path checkpoints_root(const std::filesystem::path& run_dir);

struct CheckpointInfo {
  int64_t step = 0;
  std::filesystem::path dir;
  bool complete = false;  ///< has its COMPLETE marker
};

/// The `step_<digits>` directories under `<run_dir>/checkpoints`, complete or not, sorted by step
/// (staging `.tmp` directories are not listed). Empty when there is no checkpoints directory.
std::vector<CheckpointInfo> list_checkpoints(const std::filesystem::path& run_dir);
/// The complete checkpoint with the highest step, if any.
std::optional<CheckpointInfo> latest_complete(const std::filesystem::path& run_dir);

/// Saves a single-process checkpoint (world size 1) and returns its directory. `meta` must be a JSON
/// object (or null); its "step", "world_size" and "format_version", when present, must agree with what
/// is saved. `keep_last` > 0 then deletes the oldest complete checkpoints so that `keep_last` remain,
/// never the one just written (0 keeps all). Throws InvalidArgument when a complete checkpoint of this
/// step exists already (it is never overwritten); an incomplete directory of this step is replaced.
std::filesystem::path save_checkpoint(const std::filesystem::path& run_dir, int64_t step,
                                      const nlohmann::json& meta,
                                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                                      int keep_last = 0);

/// Multi-rank save, step 1 (rank 0): checks that no complete checkpoint of `step` exists, replaces any
/// stale staging directory, and returns the (empty) staging directory `step_<step>.tmp`.
std::filesystem::path begin_checkpoint(const std::filesystem::path& run_dir, int64_t step);
/// Step 2 (every rank): writes `rank_<rank>.bin` into the staging directory.
void write_checkpoint_rank(const std::filesystem::path& staging_dir, int rank,
                           const std::vector<std::pair<std::string, Tensor>>& tensors);
/// Step 3 (rank 0, after every rank finished step 2): checks that all `world_size` rank files are there,
/// writes meta.json, renames the staging directory to its final name, writes COMPLETE, prunes to
/// `keep_last`. Returns the final directory.
std::filesystem::path finish_checkpoint(const std::filesystem::path& run_dir, int64_t step,
                                        const nlohmann::json& meta, int world_size, int keep_last = 0);

/// An opened checkpoint: its meta.json and one rank's tensor file (other ranks' files, for loading with a
/// different world size: TensorFileReader::open(dir / checkpoint_rank_file_name(r))).
struct LoadedCheckpoint {
  std::filesystem::path dir;
  int64_t step = 0;
  int world_size = 1;
  nlohmann::json meta;  ///< all of meta.json
  TensorFileReader tensors;
};

/// Opens a checkpoint directory (not a run directory; see latest_complete). IoError when it is missing,
/// incomplete ("checkpoint <dir> is incomplete (no COMPLETE marker): the run that wrote it was
/// interrupted"), or its meta.json or tensor file is damaged; InvalidArgument when `rank` is not below the
/// checkpoint's world size.
LoadedCheckpoint open_checkpoint(const std::filesystem::path& dir, int rank = 0);

}  // namespace coat::io
