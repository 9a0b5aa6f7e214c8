// A directory written whole or not at all: its files go into a hidden staging directory beside the target
// (`<parent>/.<name>.tmp.<pid>`), which commit() syncs and renames into place. A failure before commit() (an
// exception, a full disk) removes the staging directory and leaves the target as it was, so that no
// half-written directory ever carries the final name (exports of HF models).
#pragma once

#include <filesystem>

namespace coat::io {

class StagedDirectory {
 public:
  /// Checks the target before anything is written: it may be absent or an empty directory; a non-empty
  /// directory only with `replace_existing`, and only when it holds `required_marker` (a file name, e.g.
  /// "config.json"; empty: any directory), so that a mistyped path never deletes a directory that is not an
  /// earlier output; anything else is an IoError naming the target and what to do. Creates the staging
  /// directory (and the target's parent directories).
  StagedDirectory(std::filesystem::path target, bool replace_existing,
                  const std::filesystem::path& required_marker = {});
  ~StagedDirectory();
  StagedDirectory(const StagedDirectory&) = delete;
  StagedDirectory& operator=(const StagedDirectory&) = delete;

  /// Where to write the files.
  const std::filesystem::path& path() const { return staging_; }
  const std::filesystem::path& target() const { return target_; }

  /// Syncs the staging directory, moves a replaced target aside, renames the staging directory into place,
  /// syncs the parent and removes the replaced directory. Once only. The target is checked again first (it
  /// may have been created meanwhile).
  void commit();

 private:
  void check_target() const;

  std::filesystem::path target_;
  std::filesystem::path staging_;
  std::filesystem::path required_marker_;
  bool replace_existing_ = false;
  bool committed_ = false;
};

}  // namespace coat::io
