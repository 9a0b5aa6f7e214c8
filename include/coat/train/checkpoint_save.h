// Saving a checkpoint over every rank of a run: rank 0 stages, each rank that holds slices writes its own
// file, all report, and rank 0 commits (meta.json, COMPLETE, rename) only when every rank's file is written
// and checksummed, or removes the staging directory when any failed; every rank learns the outcome and a
// failure throws on all of them. The snapshot (what a rank writes) is separate from the write and the commit
// so that a background writer can take a host copy at a step boundary, write it while training goes on, and
// join the commit later (issue 14, item 4: not done yet; the write here runs inline).
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "coat/core/context.h"
#include "coat/core/tensor.h"
#include "coat/dist/communicator.h"
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

/// Saves `snapshot` collectively over `world` (null: one process) and returns the checkpoint directory. Every
/// rank calls it; `context` is where the small agreement tensors live (the communicator's device). Throws
/// IoError on every rank when any part failed, naming the rank and its error; nothing is then left in the
/// checkpoints directory. InvalidArgument (before anything is written) when a complete checkpoint of the step
/// exists.
std::filesystem::path save_checkpoint_collectively(const std::filesystem::path& run_dir,
                                                   const CheckpointSnapshot& snapshot,
                                                   dist::Communicator* world, const ContextPtr& context,
                                                   int keep_last);

}  // namespace coat::train
