// Where the time to the first step goes: the process's age when the clock is made (read from the kernel, so
// that loading the shared libraries before main counts) and named marks after it, each closing a phase.
// coat-train marks its phases (MPI, config, CUDA context, model + optimizer + data, resume) and the trainer
// marks the end of step 1, logs the breakdown and writes time_to_first_step_s into step 1's metrics record.
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace coat::train {

class StartupClock {
 public:
  /// Starts at the process's start where /proc tells it (Linux), else now; the time before now becomes a
  /// first phase named `before`.
  explicit StartupClock(std::string before = "process start to main");

  /// Closes the phase that ran since the last mark.
  void mark(std::string phase);
  /// Seconds since the process started (or since the clock was made where that is unknown).
  double elapsed_s() const;
  /// The phases in order, with their seconds.
  const std::vector<std::pair<std::string, double>>& phases() const { return phases_; }
  /// "12.34 s: process start to main 0.81 s, config 0.02 s, ...".
  std::string summary() const;

 private:
  std::chrono::steady_clock::time_point origin_;
  std::chrono::steady_clock::time_point last_;
  std::vector<std::pair<std::string, double>> phases_;
};

/// Seconds since this process started, from /proc/self/stat and /proc/uptime (10 ms resolution); negative
/// where they cannot be read.
double process_age_s();

}  // namespace coat::train
