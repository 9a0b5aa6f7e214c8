// Checkpoint directories: staging, the commit order (files synced, COMPLETE last, the directory renamed),
// listing, pruning through a trash name, and clearing what a crash left.
#include "coat/io/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <system_error>

#include "coat/core/error.h"
#include "coat/io/atomic_file.h"
#include "coat/io/checkpoint_manifest.h"
#include "coat/io/checksum.h"

namespace coat::io {
namespace {

namespace fs = std::filesystem;

constexpr const char* kStagingSuffix = ".tmp";
constexpr std::string_view kTrashSuffix = ".trash";
constexpr std::string_view kSparePrefix = "spare_";  // spare_<index>_<rank>.trash: reserved rank files
constexpr const char* kCorruptSuffix = ".corrupt";

void check_step(int64_t step, const char* op) {
  COAT_ARG_CHECK(step >= 0, op, "step ", step, " is negative");
}

// Step of a "step_<digits>" name (with `suffix` after the digits); nullopt for any other name.
std::optional<int64_t> parse_step(const std::string& name, std::string_view suffix = {}) {
  constexpr std::string_view kPrefix = "step_";
  if (name.size() <= kPrefix.size() + suffix.size() || name.compare(0, kPrefix.size(), kPrefix) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
    return std::nullopt;
  }
  const std::string digits = name.substr(kPrefix.size(), name.size() - kPrefix.size() - suffix.size());
  if (digits.empty() || digits.size() > 18 ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  return std::stoll(digits);
}

// "rank_<5 or more digits>.bin" (checkpoint_rank_file_name's form).
bool is_rank_file_name(const std::string& name) {
  constexpr std::string_view kPrefix = "rank_", kSuffix = ".bin";
  if (name.size() < kPrefix.size() + 5 + kSuffix.size() || !name.starts_with(kPrefix) || !name.ends_with(kSuffix))
    return false;
  return std::all_of(name.begin() + static_cast<std::ptrdiff_t>(kPrefix.size()),
                     name.end() - static_cast<std::ptrdiff_t>(kSuffix.size()),
                     [](char c) { return c >= '0' && c <= '9'; });
}

bool is_complete(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / kCheckpointCompleteMarker, ec);
}

void remove_tree(const fs::path& dir, const std::string& why) {
  std::error_code ec;
  fs::remove_all(dir, ec);
  if (ec) throw IoError(detail::concat("cannot remove ", dir, " (", why, "): ", ec.message()));
}

void rename_dir(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::rename(from, to, ec);
  if (ec) throw IoError(detail::concat("cannot rename ", from, " to ", to, ": ", ec.message()));
}

// Removes a directory by first renaming it out of the checkpoint namespace (`<name>.trash`), so that a crash
// during the deletion leaves a trash directory (cleared at the next start), never a half-deleted checkpoint.
// retire_tree does the renaming (and returns the trash path); trash_tree also deletes.
fs::path retire_tree(const fs::path& dir) {
  fs::path trash = dir;
  trash += kTrashSuffix;
  remove_tree(trash, "a stale trash directory");
  rename_dir(dir, trash);
  fsync_directory(dir.parent_path());
  return trash;
}

void trash_tree(const fs::path& dir, const std::string& why) { remove_tree(retire_tree(dir), why); }

// The caller's meta with the fields this layer owns; InvalidArgument when the caller's values disagree.
nlohmann::json make_meta(const nlohmann::json& meta, int64_t step, int format_version) {
  COAT_ARG_CHECK(meta.is_object() || meta.is_null(), "save_checkpoint", "meta must be a JSON object, not ",
                 meta.type_name());
  nlohmann::json out = meta.is_null() ? nlohmann::json::object() : meta;
  const auto set = [&](const char* key, const nlohmann::json& value) {
    COAT_ARG_CHECK(!out.contains(key) || out[key] == value, "save_checkpoint", "meta has \"", key,
                   "\": ", out[key].dump(), " but the checkpoint's is ", value.dump());
    out[key] = value;
  };
  set("format_version", format_version);
  set("step", step);
  if (format_version == 1) set("world_size", 1);
  COAT_ARG_CHECK(
      out.contains("world_size") && out["world_size"].is_number_integer() && out["world_size"] >= 1,
      "save_checkpoint", "meta needs a positive \"world_size\" (the ranks of the run)");
  return out;
}

void check_no_complete(const fs::path& final_dir) {
  if (is_complete(final_dir)) {
    throw InvalidArgument(detail::concat("checkpoint ", final_dir,
                                         " already exists and is complete; a checkpoint is never overwritten "
                                         "(continue from it, or remove it first)"));
  }
}

// Deletes complete checkpoints beyond the newest `keep_last`, never `just_written`.
void prune(const fs::path& run_dir, int64_t just_written_step, const fs::path& just_written, int keep_last,
           std::vector<fs::path>* retired) {
  if (keep_last <= 0) return;
  std::vector<CheckpointInfo> complete;
  for (CheckpointInfo& c : list_checkpoints(run_dir)) {
    if (c.complete) complete.push_back(std::move(c));
  }
  std::sort(complete.begin(), complete.end(),
            [](const CheckpointInfo& a, const CheckpointInfo& b) { return a.step > b.step; });
  for (size_t i = static_cast<size_t>(keep_last); i < complete.size(); ++i) {
    if (complete[i].step == just_written_step) continue;
    try {
      if (retired) {
        retired->push_back(retire_tree(complete[i].dir));
      } else {
        trash_tree(complete[i].dir, "an old checkpoint beyond keep_last");
      }
    } catch (const IoError& e) {
      throw IoError(detail::concat("checkpoint ", just_written,
                                   " was saved, but pruning old checkpoints failed: ", e.what()));
    }
  }
}

// Writes meta.json and COMPLETE into the staging directory, renames it to its final name, prunes.
fs::path commit(const fs::path& run_dir, int64_t step, const nlohmann::json& meta, int format_version,
                std::vector<ManifestFile> files, int keep_last, std::vector<fs::path>* retired = nullptr) {
  const fs::path staging = checkpoint_staging_dir(run_dir, step);
  const fs::path final_dir = checkpoints_root(run_dir) / checkpoint_dir_name(step);
  std::error_code ec;
  if (!fs::is_directory(staging, ec)) {
    throw IoError(
        detail::concat("checkpoint staging directory ", staging,
                       " does not exist (begin_checkpoint was not called, or another save removed it)"));
  }
  std::string missing;
  for (const ManifestFile& f : files) {
    if (!fs::is_regular_file(staging / f.file, ec)) missing += (missing.empty() ? "" : ", ") + f.file;
  }
  if (!missing.empty()) {
    throw IoError(detail::concat("checkpoint ", staging,
                                 " lacks the files of ranks that reported them written: ", missing));
  }
  for (const ManifestFile& f : files) check_file_size(staging, f);
  const std::string meta_text = meta.dump(2) + "\n";
  write_string_atomically(staging / kCheckpointMetaFile, meta_text);
  CheckpointManifest manifest;
  manifest.step = step;
  manifest.format_version = format_version;
  manifest.meta =
      ManifestFile{kCheckpointMetaFile, meta_text.size(), crc32c(meta_text.data(), meta_text.size())};
  manifest.files = std::move(files);
  write_string_atomically(staging / kCheckpointCompleteMarker, manifest_json(manifest));  // syncs staging

  check_no_complete(final_dir);
  if (fs::exists(final_dir, ec)) trash_tree(final_dir, "an incomplete checkpoint of the same step");
  rename_dir(staging, final_dir);
  fsync_directory(checkpoints_root(run_dir));
  prune(run_dir, step, final_dir, keep_last, retired);
  return final_dir;
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

fs::path checkpoint_staging_dir(const fs::path& run_dir, int64_t step) {
  return checkpoints_root(run_dir) / (checkpoint_dir_name(step) + kStagingSuffix);
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
  const fs::path staging = checkpoint_staging_dir(run_dir, step);
  remove_tree(staging, "a stale staging directory of an interrupted save");
  fs::create_directory(staging, ec);
  if (ec) throw IoError(detail::concat("cannot create the staging directory ", staging, ": ", ec.message()));
  return staging;
}

RankFileRecord write_checkpoint_rank(const fs::path& staging_dir, int file,
                                     const std::vector<std::pair<std::string, Tensor>>& tensors,
                                     int io_threads, const fs::path& recycle) {
  const fs::path path = staging_dir / checkpoint_rank_file_name(file);
  TensorFileWriteOptions options;
  options.io_threads = io_threads;
  options.recycle = recycle;
  const TensorFileSummary written = write_tensor_file(path, tensors, options);
  std::error_code ec;
  const uintmax_t bytes = fs::file_size(path, ec);
  if (ec) throw IoError(detail::concat("cannot stat ", path, " after writing it: ", ec.message()));
  if (bytes != written.bytes) {
    throw IoError(detail::concat(path, " has ", bytes, " bytes after writing ", written.bytes));
  }
  return {written.bytes, written.crc32c};
}

fs::path finish_checkpoint(const fs::path& run_dir, int64_t step, const nlohmann::json& meta,
                           const CheckpointLayout& layout, const std::vector<RankFileRecord>& files,
                           int keep_last, std::vector<fs::path>* retired) {
  check_step(step, "finish_checkpoint");
  COAT_ARG_CHECK(keep_last >= 0, "finish_checkpoint", "keep_last ", keep_last, " is negative");
  COAT_ARG_CHECK(files.size() == layout.files.size(), "finish_checkpoint", files.size(),
                 " rank files reported but the layout has ", layout.files.size());
  COAT_ARG_CHECK(!meta.is_object() || !meta.contains("layout"), "finish_checkpoint",
                 "meta has a \"layout\" of its own");
  layout.validate("finish_checkpoint");
  nlohmann::json full = make_meta(meta, step, kCheckpointFormatVersion);
  full["layout"] = layout.to_json();
  std::vector<ManifestFile> records;
  for (size_t f = 0; f < files.size(); ++f) {
    records.push_back({checkpoint_rank_file_name(static_cast<int>(f)), files[f].bytes, files[f].crc32c});
  }
  return commit(run_dir, step, full, kCheckpointFormatVersion, std::move(records), keep_last, retired);
}

fs::path spare_rank_file_dir(const fs::path& run_dir, int index, int rank) {
  COAT_ARG_CHECK(index >= 0 && rank >= 0, "spare_rank_file_dir", "index ", index, " and rank ", rank,
                 " must not be negative");
  return checkpoints_root(run_dir) /
         (std::string(kSparePrefix) + std::to_string(index) + "_" + std::to_string(rank) + std::string(kTrashSuffix));
}

fs::path reserve_spare_rank_file(const fs::path& run_dir, int index, int rank, int file, uint64_t bytes) {
  const fs::path dir = spare_rank_file_dir(run_dir, index, rank);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw IoError(detail::concat("cannot create ", dir, " (a spare rank file for the first saves): ", ec.message()));
  const fs::path path = dir / checkpoint_rank_file_name(file);
  write_file_atomically(path, [&](AtomicFile& f) { f.resize(bytes); });
  return path;
}

void remove_retired_checkpoint(const fs::path& trash, bool keep_rank_files) {
  COAT_ARG_CHECK(trash.filename().string().size() > kTrashSuffix.size() &&
                     trash.filename().string().ends_with(kTrashSuffix),
                 "remove_retired_checkpoint", trash, " is not a retired checkpoint (a ", kTrashSuffix, " directory)");
  if (!keep_rank_files) return remove_tree(trash, "an old checkpoint beyond keep_last");
  std::error_code ec;
  std::vector<fs::path> doomed;
  for (const fs::directory_entry& entry : fs::directory_iterator(trash, ec)) {
    if (!is_rank_file_name(entry.path().filename().string()) || !entry.is_regular_file(ec)) {
      doomed.push_back(entry.path());
    }
  }
  if (ec) throw IoError(detail::concat("cannot list ", trash, " (an old checkpoint beyond keep_last): ", ec.message()));
  for (const fs::path& p : doomed) remove_tree(p, "an old checkpoint beyond keep_last");
}

bool abandon_checkpoint(const fs::path& run_dir, int64_t step) noexcept {
  try {
    std::error_code ec;
    fs::remove_all(checkpoint_staging_dir(run_dir, step), ec);
    return !ec;
  } catch (...) {
    return false;
  }
}

fs::path save_checkpoint(const fs::path& run_dir, int64_t step, const nlohmann::json& meta,
                         const std::vector<std::pair<std::string, Tensor>>& tensors, int keep_last,
                         int io_threads) {
  COAT_ARG_CHECK(keep_last >= 0, "save_checkpoint", "keep_last ", keep_last, " is negative");
  const nlohmann::json full = make_meta(meta, step, 1);  // reject bad meta before anything is written
  begin_checkpoint(run_dir, step);
  try {
    const RankFileRecord file =
        write_checkpoint_rank(checkpoint_staging_dir(run_dir, step), 0, tensors, io_threads);
    return commit(run_dir, step, full, 1, {{checkpoint_rank_file_name(0), file.bytes, file.crc32c}},
                  keep_last);
  } catch (...) {
    abandon_checkpoint(run_dir, step);  // gone already when the failure came after the rename
    throw;
  }
}

std::vector<fs::path> remove_checkpoint_leftovers(const fs::path& run_dir) {
  std::vector<fs::path> doomed;
  const fs::path root = checkpoints_root(run_dir);
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return doomed;
  fs::directory_iterator it(root, ec);
  if (ec) throw IoError(detail::concat("cannot list checkpoints in ", root, ": ", ec.message()));
  for (const fs::directory_entry& entry : it) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory(ec)) continue;
    const bool staging = parse_step(name, kStagingSuffix).has_value();
    const bool trash = parse_step(name, kTrashSuffix).has_value() ||
                       (name.starts_with(kSparePrefix) && name.ends_with(kTrashSuffix));
    const bool incomplete = parse_step(name).has_value() && !is_complete(entry.path());
    if (staging || trash || incomplete) doomed.push_back(entry.path());
  }
  std::sort(doomed.begin(), doomed.end());
  for (const fs::path& dir : doomed) {
    if (parse_step(dir.filename().string())) {
      trash_tree(dir, "an incomplete checkpoint left by an interrupted run");
    } else {
      remove_tree(dir, "left by an interrupted run");
    }
  }
  if (!doomed.empty()) fsync_directory(root);
  return doomed;
}

fs::path mark_checkpoint_corrupt(const fs::path& dir) {
  fs::path target = dir;
  target += kCorruptSuffix;
  std::error_code ec;
  for (int n = 2; fs::exists(target, ec); ++n) {
    target = dir;
    target += detail::concat(kCorruptSuffix, ".", n);
  }
  rename_dir(dir, target);
  fsync_directory(dir.parent_path());
  return target;
}

std::filesystem::path resolve_checkpoint_dir(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path)) throw IoError(detail::concat("checkpoint path '", path.string(), "' does not exist"));
  if (std::filesystem::exists(path / "meta.json")) return path;
  auto latest = latest_complete(path);
  if (!latest) {
    throw IoError(detail::concat("'", path.string(), "' is neither a checkpoint directory (no meta.json) nor a run "
                                 "directory with a complete checkpoint"));
  }
  return latest->dir;
}

}  // namespace coat::io
