#include "coat/train/metrics_logger.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "coat/core/error.h"

namespace coat::train {

MetricsLogger::MetricsLogger(const std::filesystem::path& jsonl_path, bool progress)
    : path_(jsonl_path), progress_(progress) {
  fd_ = ::open(jsonl_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    throw IoError(detail::concat("cannot open metrics file '", jsonl_path.string(),
                                 "' for appending: ", std::strerror(errno)));
  }
}

MetricsLogger::~MetricsLogger() {
  clear_progress();
  if (fd_ >= 0) ::close(fd_);
}

void MetricsLogger::write(const nlohmann::json& record) {
  const std::string line = record.dump() + "\n";
  struct stat before {};
  const bool sized = fstat(fd_, &before) == 0;
  size_t done = 0;
  int err = 0;
  while (done < line.size()) {
    const ssize_t w = ::write(fd_, line.data() + done, line.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      err = w < 0 ? errno : ENOSPC;  // a write of 0 bytes to a regular file: no room
      break;
    }
    done += static_cast<size_t>(w);
  }
  if (err == 0) return;
  // Cut a partial line off (best effort: the disk is full, not the file system's metadata).
  bool partial = done > 0;
  if (partial && sized && S_ISREG(before.st_mode) && ftruncate(fd_, before.st_size) == 0) partial = false;
  const std::string step = record.contains("step") ? " of step " + record["step"].dump() : std::string();
  throw IoError(detail::concat("cannot write metrics file '", path_.string(), "': ", std::strerror(err),
                               " (the record", step, " was not written",
                               partial ? "; a partial line remains at the end of the file" : "", ")"));
}

void MetricsLogger::progress(int64_t step, int64_t total, double loss, double seconds_per_step) {
  if (!progress_) return;
  const double eta = seconds_per_step * static_cast<double>(total - step);
  const int width = 30;
  const int filled = total > 0 ? static_cast<int>(width * step / total) : width;
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(width, '.');
  std::fprintf(stderr, "\r[%s] %lld/%lld loss %.4f ETA %dm%02ds ", bar.c_str(), static_cast<long long>(step),
               static_cast<long long>(total), loss, static_cast<int>(eta) / 60, static_cast<int>(eta) % 60);
  std::fflush(stderr);
  progress_shown_ = true;
}

void MetricsLogger::clear_progress() {
  if (!progress_shown_) return;
  std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
  progress_shown_ = false;
}

}  // namespace coat::train
