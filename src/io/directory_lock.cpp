#include "coat/io/directory_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <utility>

namespace coat::io {

namespace {

std::string holder_record() {
  char host[256] = "?";
  if (gethostname(host, sizeof(host) - 1) != 0) std::strcpy(host, "?");
  host[sizeof(host) - 1] = '\0';
  char when[32] = "?";
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  if (gmtime_r(&now, &utc) != nullptr) std::strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return detail::concat("pid ", getpid(), " on host ", host, " since ", when);
}

// What the holder wrote (its first line), read through our own descriptor.
std::string read_holder(int fd) {
  char text[512];
  const ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
  if (n <= 0) return "a process that has not recorded itself yet";
  std::string s(text, static_cast<size_t>(n));
  s = s.substr(0, s.find('\n'));
  return s;
}

void write_record(int fd, const std::filesystem::path& path) {
  const std::string record = holder_record() + "\n";
  if (ftruncate(fd, 0) != 0) {
    throw IoError(detail::concat("cannot truncate lock file '", path.string(), "': ", std::strerror(errno)));
  }
  for (size_t done = 0; done < record.size();) {
    const ssize_t w = pwrite(fd, record.data() + done, record.size() - done, static_cast<off_t>(done));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      throw IoError(detail::concat("cannot write lock file '", path.string(),
                                   "': ", w < 0 ? std::strerror(errno) : "no byte written"));
    }
    done += static_cast<size_t>(w);
  }
}

}  // namespace

DirectoryLock DirectoryLock::acquire(const std::filesystem::path& dir, const std::string& file_name) {
  DirectoryLock lock;
  lock.path_ = dir / file_name;
  lock.fd_ = ::open(lock.path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock.fd_ < 0) {
    throw IoError(
        detail::concat("cannot open lock file '", lock.path_.string(), "': ", std::strerror(errno)));
  }
  int rc;
  do {
    rc = flock(lock.fd_, LOCK_EX | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    const int err = errno;
    if (err == EWOULDBLOCK) {
      const std::string holder = read_holder(lock.fd_);
      throw DirectoryLocked(detail::concat("'", dir.string(), "' is in use: locked by ", holder,
                                           " (lock file '", lock.path_.string(), "')"),
                            holder);
    }
    throw IoError(detail::concat("cannot lock '", lock.path_.string(), "': ", std::strerror(err)));
  }
  write_record(lock.fd_, lock.path_);
  return lock;
}

DirectoryLock::~DirectoryLock() {
  release();
}

DirectoryLock::DirectoryLock(DirectoryLock&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), path_(std::move(other.path_)) {}

DirectoryLock& DirectoryLock::operator=(DirectoryLock&& other) noexcept {
  if (this != &other) {
    release();
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
  }
  return *this;
}

void DirectoryLock::release() noexcept {
  // The file stays: removing it would race with a process that opened it and waits to lock it. Closing the
  // last descriptor releases the lock.
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

}  // namespace coat::io
