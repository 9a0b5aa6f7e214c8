#include "coat/train/startup_clock.h"

#include <unistd.h>

#include <fmt/format.h>

#include <fstream>
#include <sstream>

namespace coat::train {

double process_age_s() {
  std::ifstream stat_file("/proc/self/stat");
  std::ifstream uptime_file("/proc/uptime");
  std::string stat;
  double uptime = 0.0;
  if (!std::getline(stat_file, stat) || !(uptime_file >> uptime)) return -1.0;
  // Field 22 is the start time in clock ticks after boot; the command name (field 2) may hold spaces, so
  // count the fields after its closing parenthesis (field 3 is the first one after it).
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return -1.0;
  std::istringstream rest(stat.substr(close + 1));
  std::string field;
  for (int i = 3; i <= 22; ++i) {
    if (!(rest >> field)) return -1.0;
  }
  const long ticks = sysconf(_SC_CLK_TCK);
  if (ticks <= 0) return -1.0;
  const double started = std::stod(field) / static_cast<double>(ticks);
  return uptime >= started ? uptime - started : -1.0;
}

StartupClock::StartupClock(std::string before) : last_(std::chrono::steady_clock::now()) {
  const double age = process_age_s();
  origin_ = last_;
  if (age > 0.0) {
    origin_ -= std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(age));
    phases_.emplace_back(std::move(before), age);
  }
}

void StartupClock::mark(std::string phase) {
  const auto now = std::chrono::steady_clock::now();
  phases_.emplace_back(std::move(phase), std::chrono::duration<double>(now - last_).count());
  last_ = now;
}

double StartupClock::elapsed_s() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - origin_).count();
}

std::string StartupClock::summary() const {
  std::string out = fmt::format("{:.2f} s:", std::chrono::duration<double>(last_ - origin_).count());
  for (size_t i = 0; i < phases_.size(); ++i) {
    out += fmt::format("{} {} {:.2f} s", i == 0 ? "" : ",", phases_[i].first, phases_[i].second);
  }
  return out;
}

}  // namespace coat::train
