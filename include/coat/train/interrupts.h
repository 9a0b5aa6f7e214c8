// Interrupts of a training run: stop (SIGINT, SIGTERM, SIGUSR2: finish the step, save a checkpoint, end with
// kExitStopped) and save (SIGUSR1, as schedulers send ahead of a preemption: save a checkpoint and go on).
// SIGUSR2 is for mpirun, which forwards SIGUSR1 and SIGUSR2 to every rank but answers SIGTERM and SIGINT by
// killing the job itself within about a second (Open MPI), too soon for the ranks to save.
// The trainer polls an InterruptSource once per step; the ranks of a job agree on the largest request.
//
// SignalInterrupts keeps the one process-wide state of coat-train: a signal handler can reach nothing but
// process-wide variables, so the counters it bumps live in interrupts.cpp alone and nothing else reads them.
#pragma once

#include <csignal>
#include <cstdint>
#include <string_view>

namespace coat::train {

/// What a run is asked to do after its current step. Ordered: across ranks the largest wins, and Fail (a rank
/// could not write the run directory) outranks a stop, which outranks a save.
enum class Interrupt : int { None = 0, Save = 1, Stop = 2, Fail = 3 };
std::string_view to_string(Interrupt interrupt);

/// The exit status of coat-train after a graceful stop (EX_TEMPFAIL of sysexits.h: "try again later"; the
/// run continues with --resume auto).
inline constexpr int kExitStopped = 75;

/// Where a run stands: what a second stop signal (which ends the process at once) would lose.
struct RunProgress {
  int64_t step = 0;         ///< the last completed step
  int64_t saved_step = -1;  ///< the newest checkpoint of the run (-1: none)
  bool saving = false;      ///< a checkpoint of `step` is being written
};

/// What the trainer asks once per step.
class InterruptSource {
 public:
  virtual ~InterruptSource() = default;
  /// The request to act on after the step that just ended: Stop stays once it came; a Save is returned once.
  virtual Interrupt poll() = 0;
  /// Where the run stands (called after each step and around saves).
  virtual void report(const RunProgress& progress) { (void)progress; }
  /// What asked for the stop, for messages ("SIGTERM"); "" when nothing did.
  virtual std::string_view stop_reason() const { return {}; }
};

/// Handlers for SIGINT, SIGTERM and SIGUSR2 (stop) and SIGUSR1 (save), installed on construction and the
/// previous ones restored on destruction; at most one per process (InvalidArgument otherwise). The first stop
/// signal is acknowledged on stderr; a second one writes what is lost (from the last report()) and ends the
/// process by that signal's default action (exit status 128 + signal number), without saving.
class SignalInterrupts final : public InterruptSource {
 public:
  SignalInterrupts();
  ~SignalInterrupts() override;
  SignalInterrupts(const SignalInterrupts&) = delete;
  SignalInterrupts& operator=(const SignalInterrupts&) = delete;

  Interrupt poll() override;
  void report(const RunProgress& progress) override;
  std::string_view stop_reason() const override;

 private:
  int64_t saves_seen_ = 0;
  struct sigaction previous_int_ {
  }, previous_term_{}, previous_usr1_{}, previous_usr2_{};
};

}  // namespace coat::train
