// StagedDirectory: a hidden sibling directory renamed into place (rename(2) replaces an empty directory
// atomically; a non-empty one is moved aside first and removed after).
#include "coat/io/staged_directory.h"

#include <unistd.h>

#include <string>
#include <system_error>

#include "coat/core/error.h"
#include "coat/io/atomic_file.h"

namespace coat::io {

namespace fs = std::filesystem;

namespace {

fs::path sibling(const fs::path& target, const char* what) {
  std::string name = ".";
  name += target.filename().string();
  name += detail::concat(".", what, ".", ::getpid());
  return target.parent_path() / name;
}

void rename_or_throw(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::rename(from, to, ec);
  if (ec) throw IoError(detail::concat("cannot rename ", from, " to ", to, ": ", ec.message()));
}

}  // namespace

StagedDirectory::StagedDirectory(fs::path target, bool replace_existing, const fs::path& required_marker)
    : target_(fs::absolute(std::move(target)).lexically_normal()),
      required_marker_(required_marker),
      replace_existing_(replace_existing) {
  if (!target_.has_filename()) target_ = target_.parent_path();  // "out/" names "out"
  COAT_ARG_CHECK(target_.has_filename() && target_ != target_.root_path(), "StagedDirectory", "output path ",
                 target_, " names no directory");
  check_target();
  staging_ = sibling(target_, "tmp");
  std::error_code ec;
  fs::create_directories(target_.parent_path(), ec);
  if (ec) throw IoError(detail::concat("cannot create ", target_.parent_path(), ": ", ec.message()));
  fs::remove_all(staging_, ec);  // a stale one of an earlier process with our pid
  if (!fs::create_directory(staging_, ec) || ec) {
    throw IoError(detail::concat("cannot create the staging directory ", staging_, ": ", ec.message()));
  }
}

StagedDirectory::~StagedDirectory() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(staging_, ec);  // best effort: a destructor cannot report
}

void StagedDirectory::check_target() const {
  std::error_code ec;
  const fs::file_status status = fs::symlink_status(target_, ec);
  if (!fs::exists(status)) return;
  if (!fs::is_directory(status)) {
    throw IoError(
        detail::concat("output ", target_, " exists and is not a directory; choose another --output"));
  }
  if (fs::is_empty(target_, ec) && !ec) return;
  if (!replace_existing_) {
    throw IoError(
        detail::concat("output directory ", target_,
                       " exists and is not empty; pass --force to replace it, or choose another --output"));
  }
  if (!required_marker_.empty() && !fs::exists(target_ / required_marker_)) {
    throw IoError(detail::concat("refusing to replace ", target_, ": it has no ", required_marker_,
                                 ", so it is not an earlier output; remove it yourself if it should go"));
  }
}

void StagedDirectory::commit() {
  COAT_ARG_CHECK(!committed_, "StagedDirectory", "commit() of ", target_, " twice");
  fsync_directory(staging_);
  check_target();
  std::error_code ec;
  const bool replacing = fs::exists(target_, ec) && !fs::is_empty(target_, ec);
  const fs::path old = sibling(target_, "old");
  if (replacing) {
    fs::remove_all(old, ec);
    rename_or_throw(target_, old);
  }
  try {
    rename_or_throw(staging_, target_);
  } catch (...) {
    if (replacing) fs::rename(old, target_, ec);  // put the earlier output back
    throw;
  }
  committed_ = true;
  fsync_directory(target_.parent_path());
  if (replacing) fs::remove_all(old, ec);
}

}  // namespace coat::io
