// Training metrics: a console line through spdlog every log interval, every record as one JSON line in
// <run>/metrics.jsonl (appended, so a resumed run continues the file), and an in-place progress line
// with ETA when stderr is a terminal.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>

namespace coat::train {

class MetricsLogger {
 public:
  MetricsLogger(const std::filesystem::path& jsonl_path, bool progress);
  ~MetricsLogger();
  /// One record (JSON object) to the file; flushed so a crash loses nothing written.
  void write(const nlohmann::json& record);
  /// The progress line: "[step/total] loss ... ETA ..." (terminal only).
  void progress(int64_t step, int64_t total, double loss, double seconds_per_step);
  /// Ends the progress line before other output.
  void clear_progress();

 private:
  std::ofstream out_;
  bool progress_;
  bool progress_shown_ = false;
};

}  // namespace coat::train
