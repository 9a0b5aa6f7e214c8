// Atomic file writes with POSIX calls: temporary file, fsync, rename, directory fsync.
#include "coat/io/atomic_file.h"

#ifndef _GNU_SOURCE
#define _GNU_SOURCE  // sync_file_range
#endif
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>
#include <vector>

#include "coat/core/error.h"

namespace coat::io {
namespace {

std::string errno_text(int err) {
  return std::strerror(err);
}

}  // namespace

AtomicFile::AtomicFile(std::filesystem::path target) : AtomicFile(std::move(target), {}) {}

AtomicFile::AtomicFile(std::filesystem::path target, const std::filesystem::path& recycle)
    : target_(std::move(target)) {
  COAT_ARG_CHECK(!target_.empty() && target_.has_filename(), "AtomicFile", "target path ", target_,
                 " names no file");
  temp_ = target_;
  temp_ += ".tmp." + std::to_string(::getpid());
  struct stat st {};
  // A recycled file that is a regular file and could be renamed is opened as it is; anything else
  // (missing, another file system: EXDEV) gives a new, empty file.
  const bool recycled = !recycle.empty() && ::lstat(recycle.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
                        ::rename(recycle.c_str(), temp_.c_str()) == 0;
  fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | (recycled ? 0 : O_TRUNC) | O_CLOEXEC, 0644);
  if (fd_ >= 0 && recycled) recycled_bytes_ = reserved_bytes_ = static_cast<uint64_t>(st.st_size);
  if (fd_ < 0) {
    throw IoError(detail::concat("cannot create ", temp_, " (to write ", target_, "): ", errno_text(errno)));
  }
}

AtomicFile::~AtomicFile() {
  discard();
}

void AtomicFile::discard() noexcept {
  if (fd_ < 0) return;
  ::close(fd_);
  fd_ = -1;
  ::unlink(temp_.c_str());
}

void AtomicFile::check_open(const char* what) const {
  if (fd_ < 0) {
    throw InvalidArgument(detail::concat("[AtomicFile] ", what, " on ", target_, " after commit()"));
  }
}

void AtomicFile::write(const void* data, size_t bytes) {
  check_open("write");
  const auto* p = static_cast<const uint8_t*>(data);
  size_t left = bytes;
  while (left > 0) {
    const ssize_t done = ::write(fd_, p, left);
    if (done < 0 && errno == EINTR) continue;
    if (done <= 0) {
      const int err = done < 0 ? errno : EIO;
      throw IoError(detail::concat("writing ", temp_, " (for ", target_, ") failed after ",
                                   position_ + (bytes - left), " bytes: ", errno_text(err)));
    }
    p += done;
    left -= static_cast<size_t>(done);
  }
  position_ += bytes;
}

void AtomicFile::pad_to(uint64_t offset) {
  COAT_ARG_CHECK(offset >= position_, "AtomicFile", "pad_to(", offset, ") is before the position ", position_,
                 " in ", temp_);
  static constexpr size_t kChunk = 4096;
  const std::vector<uint8_t> zeros(std::min<uint64_t>(kChunk, offset - position_), 0);
  while (position_ < offset) write(zeros.data(), std::min<uint64_t>(zeros.size(), offset - position_));
}

void AtomicFile::write_at(uint64_t offset, const void* data, size_t bytes) {
  check_open("write_at");
  COAT_ARG_CHECK(offset <= position_ && bytes <= position_ - offset, "AtomicFile", "write_at of ", bytes,
                 " bytes at ", offset, " is past the ", position_, " bytes written to ", temp_);
  const auto* p = static_cast<const uint8_t*>(data);
  size_t done_total = 0;
  while (done_total < bytes) {
    const ssize_t done =
        ::pwrite(fd_, p + done_total, bytes - done_total, static_cast<off_t>(offset + done_total));
    if (done < 0 && errno == EINTR) continue;
    if (done <= 0) {
      const int err = done < 0 ? errno : EIO;
      throw IoError(detail::concat("writing ", temp_, " (for ", target_, ") at byte ", offset + done_total,
                                   " failed: ", errno_text(err)));
    }
    done_total += static_cast<size_t>(done);
  }
}

void AtomicFile::resize(uint64_t bytes) {
  check_open("resize");
  COAT_ARG_CHECK(bytes >= position_, "AtomicFile", "resize(", bytes, ") would cut the ", position_,
                 " bytes written to ", temp_);
  // The disk space first (Linux fallocate: the blocks are the file's before any data is written), so that
  // a disk without room fails now, before gigabytes are written, naming the size; where the file system
  // cannot reserve (EOPNOTSUPP), the file is only sized, and a full disk shows at a write.
  // A recycled file's own length is already reserved.
  const uint64_t from = std::max(position_, reserved_bytes_);
  int rc = 0;
  do {
    rc = bytes > from ? ::fallocate(fd_, 0, static_cast<off_t>(from), static_cast<off_t>(bytes - from)) : 0;
  } while (rc != 0 && errno == EINTR);
  if (rc != 0 && errno != EOPNOTSUPP && errno != ENOSYS) {
    throw IoError(detail::concat("cannot reserve ", bytes, " bytes on the disk for ", temp_, " (for ", target_,
                                 "): ", errno_text(errno)));
  }
  do {
    rc = ::ftruncate(fd_, static_cast<off_t>(bytes));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    throw IoError(detail::concat("cannot size ", temp_, " (for ", target_, ") to ", bytes,
                                 " bytes: ", errno_text(errno)));
  }
  position_ = bytes;
  reserved_bytes_ = bytes;  // a longer recycled file was cut to it
}

void AtomicFile::write_back_and_drop(uint64_t offset, uint64_t bytes) {
  check_open("write_back_and_drop");
  if (bytes == 0) return;
  constexpr unsigned kWriteAndWait =
      SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER;
  if (::sync_file_range(fd_, static_cast<off_t>(offset), static_cast<off_t>(bytes), kWriteAndWait) != 0) {
    const int err = errno;
    // File systems without it (ESPIPE, EINVAL, ENOSYS) leave the write-back to fsync.
    if (err == EIO || err == ENOSPC || err == EDQUOT) {
      throw IoError(detail::concat("writing ", temp_, " (for ", target_, ") bytes [", offset, ", ",
                                   offset + bytes, ") back to the disk failed: ", errno_text(err)));
    }
    return;
  }
  ::posix_fadvise(fd_, static_cast<off_t>(offset), static_cast<off_t>(bytes), POSIX_FADV_DONTNEED);
}

void AtomicFile::commit() {
  check_open("commit");
  if (::fsync(fd_) != 0) {
    const int err = errno;
    discard();
    throw IoError(detail::concat("fsync of ", temp_, " (for ", target_, ") failed: ", errno_text(err)));
  }
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(temp_.c_str());
    throw IoError(detail::concat("closing ", temp_, " (for ", target_, ") failed: ", errno_text(err)));
  }
  if (::rename(temp_.c_str(), target_.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp_.c_str());
    throw IoError(detail::concat("cannot rename ", temp_, " to ", target_, ": ", errno_text(err)));
  }
  const std::filesystem::path parent = target_.parent_path();
  fsync_directory(parent.empty() ? std::filesystem::path(".") : parent);
}

void write_file_atomically(const std::filesystem::path& target,
                           const std::function<void(AtomicFile&)>& fill, const std::filesystem::path& recycle) {
  AtomicFile file(target, recycle);
  fill(file);  // an exception here destroys `file`, which removes the temporary file
  file.commit();
}

void write_string_atomically(const std::filesystem::path& target, std::string_view text) {
  write_file_atomically(target, [&](AtomicFile& file) { file.write(text); });
}

void fsync_directory(const std::filesystem::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    throw IoError(detail::concat("cannot open directory ", dir, " to sync it: ", errno_text(errno)));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  // Some file systems do not sync directories (EINVAL); that is no failure of ours.
  if (rc != 0 && err != EINVAL) {
    throw IoError(detail::concat("fsync of directory ", dir, " failed: ", errno_text(err)));
  }
}

std::vector<std::filesystem::path> remove_stale_temporaries(const std::filesystem::path& target) {
  namespace fs = std::filesystem;
  const fs::path parent = target.parent_path().empty() ? fs::path(".") : target.parent_path();
  const std::string prefix = target.filename().string() + ".tmp.";
  std::vector<fs::path> stale;
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(parent, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const bool pid = std::all_of(name.begin() + static_cast<std::ptrdiff_t>(prefix.size()), name.end(),
                                 [](char c) { return c >= '0' && c <= '9'; });
    if (pid && entry.is_regular_file(ec)) stale.push_back(entry.path());
  }
  if (ec)
    throw IoError(
        detail::concat("cannot list ", parent, " for temporary files of ", target, ": ", ec.message()));
  std::sort(stale.begin(), stale.end());
  for (const fs::path& p : stale) {
    if (!fs::remove(p, ec) && ec) throw IoError(detail::concat("cannot remove ", p, ": ", ec.message()));
  }
  return stale;
}

}  // namespace coat::io
