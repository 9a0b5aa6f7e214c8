// Checkpoint directories: staging, the commit order (files synced, directory renamed, marker last),
// listing, pruning and opening.
#include "coat/io/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <system_error>

#include "coat/core/error.h"
#include "coat/io/atomic_file.h"

namespace coat::io {
namespace {

namespace fs = std::filesystem;

constexpr const char* kMetaFile = "meta.json";
constexpr const char* kCompleteMarker = "COMPLETE";
constexpr const char* kStagingSuffix = ".tmp";

void check_step(int64_t step, const char* op) {
  COAT_ARG_CHECK(step >= 0, op, "step ", step, " is negative");
}

// Step of a "step_<digits>" name; nullopt for any other name.
std::optional<int64_t> parse_step(const std::string& name) {
  constexpr std::string_view kPrefix = "step_";
  if (name.size() <= kPrefix.size() || name.compare(0, kPrefix.size(), kPrefix) != 0) return std::nullopt;
  const std::string digits = name.substr(kPrefix.size());
  if (digits.size() > 18 ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  return std::stoll(digits);
}

fs::path staging_dir(const fs::path& run_dir, int64_t step) {
  return checkpoints_root(run_dir) / (checkpoint_dir_name(step) + kStagingSuffix);
}

bool is_complete(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / kCompleteMarker, ec);
}

void remove_tree(const fs::path& dir, const std::string& why) {
  std::error_code ec;
  fs::remove_all(dir, ec);
  if (ec) throw IoError(detail::concat("cannot remove ", dir, " (", why, "): ", ec.message()));
}

// The caller's meta with the fields this layer owns; InvalidArgument when the caller's values disagree.
nlohmann::json make_meta(const nlohmann::json& meta, int64_t step, int world_size) {
  COAT_ARG_CHECK(meta.is_object() || meta.is_null(), "save_checkpoint", "meta must be a JSON object, not ",
                 meta.type_name());
  nlohmann::json out = meta.is_null() ? nlohmann::json::object() : meta;
  const auto set = [&](const char* key, const nlohmann::json& value) {
    COAT_ARG_CHECK(!out.contains(key) || out[key] == value, "save_checkpoint", "meta has \"", key,
                   "\": ", out[key].dump(), " but the checkpoint's is ", value.dump());
    out[key] = value;
  };
  set("format_version", kCheckpointFormatVersion);
  set("step", step);
  set("world_size", world_size);
  return out;
}

void check_no_complete(const fs::path& final_dir) {
  if (is_complete(final_dir)) {
    throw InvalidArgument(detail::concat("checkpoint ", final_dir,
                                         " already exists and is complete; a checkpoint is never overwritten "
                                         "(continue from it, or remove it first)"));
  }
}

// Deletes complete checkpoints beyond the newest `keep_last`, never `just_written`. The marker goes
// first, so that a deletion cut short leaves an incomplete directory, never a "complete" one with files
// missing.
void prune(const fs::path& run_dir, int64_t just_written_step, const fs::path& just_written, int keep_last) {
  if (keep_last <= 0) return;
  std::vector<CheckpointInfo> complete;
  for (CheckpointInfo& c : list_checkpoints(run_dir)) {
    if (c.complete) complete.push_back(std::move(c));
  }
  std::sort(complete.begin(), complete.end(),
            [](const CheckpointInfo& a, const CheckpointInfo& b) { return a.step > b.step; });
  bool removed = false;
  for (size_t i = static_cast<size_t>(keep_last); i < complete.size(); ++i) {
    const fs::path& dir = complete[i].dir;
    if (complete[i].step == just_written_step) continue;
    try {
      std::error_code ec;
      fs::remove(dir / kCompleteMarker, ec);
      if (ec) throw IoError(detail::concat("cannot remove ", dir / kCompleteMarker, ": ", ec.message()));
      fsync_directory(dir);
      remove_tree(dir, "an old checkpoint beyond keep_last");
      removed = true;
    } catch (const IoError& e) {
      throw IoError(detail::concat("checkpoint ", just_written,
                                   " was saved, but pruning old checkpoints failed: ", e.what()));
    }
  }
  if (removed) fsync_directory(checkpoints_root(run_dir));
}

}  // namespace

std::string checkpoint_dir_name(int64_t step) {
  check_step(step, "checkpoint_dir_name");
  char name[32];
  std::snprintf(name, sizeof(name), "step_%08lld", static_cast<long long>(step));
  return name;
}

std::string checkpoint_rank_file_name(int rank) {
  COAT_ARG_CHECK(rank >= 0, "checkpoint_rank_file_name", "rank ", rank, " is negative");
  char name[32];
  std::snprintf(name, sizeof(name), "rank_%05d.bin", rank);
  return name;
}

fs::path checkpoints_root(const fs::path& run_dir) {
  return run_dir / "checkpoints";
}

std::vector<CheckpointInfo> list_checkpoints(const fs::path& run_dir) {
  std::vector<CheckpointInfo> out;
  const fs::path root = checkpoints_root(run_dir);
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return out;
  fs::directory_iterator it(root, ec);
  if (ec) throw IoError(detail::concat("cannot list checkpoints in ", root, ": ", ec.message()));
  for (const fs::directory_entry& entry : it) {
    const std::optional<int64_t> step = parse_step(entry.path().filename().string());
    if (!step || !entry.is_directory(ec)) continue;
    out.push_back({*step, entry.path(), is_complete(entry.path())});
  }
  std::sort(out.begin(), out.end(),
            [](const CheckpointInfo& a, const CheckpointInfo& b) { return a.step < b.step; });
  return out;
}

std::optional<CheckpointInfo> latest_complete(const fs::path& run_dir) {
  const std::vector<CheckpointInfo> all = list_checkpoints(run_dir);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    if (it->complete) return *it;
  }
  return std::nullopt;
}

fs::path begin_checkpoint(const fs::path& run_dir, int64_t step) {
  check_step(step, "begin_checkpoint");
  const fs::path root = checkpoints_root(run_dir);
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) throw IoError(detail::concat("cannot create the checkpoints directory ", root, ": ", ec.message()));
  check_no_complete(root / checkpoint_dir_name(step));
  const fs::path staging = staging_dir(run_dir, step);
  remove_tree(staging, "a stale staging directory of an interrupted save");
  fs::create_directory(staging, ec);
  if (ec) throw IoError(detail::concat("cannot create the staging directory ", staging, ": ", ec.message()));
  return staging;
}

void write_checkpoint_rank(const fs::path& staging_dir, int rank,
                           const std::vector<std::pair<std::string, Tensor>>& tensors) {
  write_tensor_file(staging_dir / checkpoint_rank_file_name(rank), tensors);
}

fs::path finish_checkpoint(const fs::path& run_dir, int64_t step, const nlohmann::json& meta, int world_size,
                           int keep_last) {
  check_step(step, "finish_checkpoint");
  COAT_ARG_CHECK(world_size >= 1, "finish_checkpoint", "world size ", world_size, " is not positive");
  COAT_ARG_CHECK(keep_last >= 0, "finish_checkpoint", "keep_last ", keep_last, " is negative");
  const nlohmann::json full_meta = make_meta(meta, step, world_size);
  const fs::path root = checkpoints_root(run_dir);
  const fs::path staging = staging_dir(run_dir, step);
  const fs::path final_dir = root / checkpoint_dir_name(step);
  std::error_code ec;
  if (!fs::is_directory(staging, ec)) {
    throw IoError(detail::concat("checkpoint staging directory ", staging,
                                 " does not exist (begin_checkpoint "
                                 "was not called, or another save removed it)"));
  }
  std::string missing;
  for (int r = 0; r < world_size; ++r) {
    if (!fs::is_regular_file(staging / checkpoint_rank_file_name(r), ec)) {
      missing += (missing.empty() ? "" : ", ") + checkpoint_rank_file_name(r);
    }
  }
  if (!missing.empty()) {
    throw IoError(detail::concat("checkpoint ", staging,
                                 " lacks the files of ranks that should have written "
                                 "them (world size ",
                                 world_size, "): ", missing));
  }
  write_string_atomically(staging / kMetaFile, full_meta.dump(2) + "\n");
  fsync_directory(staging);

  check_no_complete(final_dir);
  remove_tree(final_dir, "an incomplete checkpoint of the same step");
  fs::rename(staging, final_dir, ec);
  if (ec) throw IoError(detail::concat("cannot rename ", staging, " to ", final_dir, ": ", ec.message()));
  fsync_directory(root);
  const nlohmann::json marker = {{"step", step}, {"world_size", world_size}};
  write_string_atomically(final_dir / kCompleteMarker, marker.dump() + "\n");  // syncs final_dir too

  prune(run_dir, step, final_dir, keep_last);
  return final_dir;
}

fs::path save_checkpoint(const fs::path& run_dir, int64_t step, const nlohmann::json& meta,
                         const std::vector<std::pair<std::string, Tensor>>& tensors, int keep_last) {
  COAT_ARG_CHECK(keep_last >= 0, "save_checkpoint", "keep_last ", keep_last, " is negative");
  make_meta(meta, step, 1);  // reject bad meta before anything is written
  const fs::path staging = begin_checkpoint(run_dir, step);
  try {
    write_checkpoint_rank(staging, 0, tensors);
    return finish_checkpoint(run_dir, step, meta, 1, keep_last);
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(staging, ignored);  // gone already when the failure came after the rename
    throw;
  }
}

LoadedCheckpoint open_checkpoint(const fs::path& dir, int rank) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw IoError(detail::concat("checkpoint ", dir, " does not exist or is not a directory"));
  }
  if (!is_complete(dir)) {
    throw IoError(detail::concat(
        "checkpoint ", dir, " is incomplete (no COMPLETE marker): the run that wrote it was interrupted"));
  }
  const fs::path meta_path = dir / kMetaFile;
  std::ifstream in(meta_path);
  if (!in) throw IoError(detail::concat("checkpoint ", dir, ": cannot read ", meta_path));
  LoadedCheckpoint out;
  out.dir = dir;
  try {
    out.meta = nlohmann::json::parse(in);
    const int version = out.meta.at("format_version").get<int>();
    if (version != kCheckpointFormatVersion) {
      throw IoError(detail::concat("checkpoint ", dir, ": format version ", version,
                                   ", this build reads version ", kCheckpointFormatVersion));
    }
    out.step = out.meta.at("step").get<int64_t>();
    out.world_size = out.meta.at("world_size").get<int>();
  } catch (const nlohmann::json::exception& e) {
    throw IoError(
        detail::concat("checkpoint ", dir, ": ", meta_path.filename(), " is damaged (", e.what(), ")"));
  }
  if (out.world_size < 1) {
    throw IoError(detail::concat("checkpoint ", dir, ": meta.json says world size ", out.world_size));
  }
  COAT_ARG_CHECK(rank >= 0 && rank < out.world_size, "open_checkpoint", "rank ", rank, " of checkpoint ", dir,
                 " written by ", out.world_size, " rank(s)");
  out.tensors = TensorFileReader::open(dir / checkpoint_rank_file_name(rank));
  return out;
}

}  // namespace coat::io
