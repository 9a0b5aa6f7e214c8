// An advisory lock on a directory, for one writer per run directory: flock() on a file in it, held while the
// DirectoryLock lives and released by the kernel when the process ends, however it ends (no stale locks
// after a crash or kill -9). The holder records its PID, host and start time in the file, so that a second
// process is refused with them. Local file systems and NFS (where Linux maps flock to a byte-range lock).
#pragma once

#include <filesystem>
#include <string>

#include "coat/core/error.h"

namespace coat::io {

/// The lock is held by another open file (another process, or another DirectoryLock of this one).
class DirectoryLocked : public IoError {
 public:
  DirectoryLocked(const std::string& what, std::string holder) : IoError(what), holder_(std::move(holder)) {}
  /// "pid 1234 on host node7 since 2026-12-05T15:40:00Z", or a note that the holder wrote nothing yet.
  const std::string& holder() const { return holder_; }

 private:
  std::string holder_;
};

class DirectoryLock {
 public:
  DirectoryLock() = default;
  /// Locks `dir / file_name`, creating the file (`dir` must exist), and writes this process's PID, host and
  /// the time into it. DirectoryLocked naming the holder when it is locked already; IoError naming the file
  /// and the OS error when it cannot be created or written.
  static DirectoryLock acquire(const std::filesystem::path& dir, const std::string& file_name = "run.lock");
  ~DirectoryLock();
  DirectoryLock(DirectoryLock&& other) noexcept;
  DirectoryLock& operator=(DirectoryLock&& other) noexcept;
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;

  bool held() const { return fd_ >= 0; }
  const std::filesystem::path& path() const { return path_; }

 private:
  void release() noexcept;

  int fd_ = -1;
  std::filesystem::path path_;
};

}  // namespace coat::io
