#include "coat/train/metrics_logger.h"

#include <cstdio>

#include "coat/core/error.h"

namespace coat::train {

MetricsLogger::MetricsLogger(const std::filesystem::path& jsonl_path, bool progress) : progress_(progress) {
  out_.open(jsonl_path, std::ios::app);
  if (!out_) throw IoError(detail::concat("cannot open metrics file '", jsonl_path.string(), "' for appending"));
}

MetricsLogger::~MetricsLogger() { clear_progress(); }

void MetricsLogger::write(const nlohmann::json& record) {
  out_ << record.dump() << '\n';
  out_.flush();
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
