// Training metrics: a console line through spdlog every log interval, every record as one JSON line in
// <run>/metrics.jsonl (appended, so a resumed run continues the file), and an in-place progress line
// with ETA when stderr is a terminal.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>

namespace coat::train {

class MetricsLogger {
 public:
  /// Opens (creating) the file for appending; IoError naming it and the OS error when that fails.
  MetricsLogger(const std::filesystem::path& jsonl_path, bool progress);
  ~MetricsLogger();
  MetricsLogger(const MetricsLogger&) = delete;
  MetricsLogger& operator=(const MetricsLogger&) = delete;
  /// One record (JSON object) as one line, written with one append: a crash loses nothing written. A failed
  /// or short write (a full disk) throws IoError naming the file, the record's step and the OS error, after
  /// cutting the file back to its last whole line, so that the file never holds half a record.
  void write(const nlohmann::json& record);
  /// The progress line: "[step/total] loss ... ETA ..." (terminal only).
  void progress(int64_t step, int64_t total, double loss, double seconds_per_step);
  /// Ends the progress line before other output.
  void clear_progress();
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  bool progress_;
  bool progress_shown_ = false;
};

}  // namespace coat::train
