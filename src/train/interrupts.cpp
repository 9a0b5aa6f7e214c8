// Signal handlers for graceful stops and saves. Everything a handler touches is a lock-free atomic of this
// file, and a handler calls only async-signal-safe functions (write, sigaction, raise).
#include "coat/train/interrupts.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "coat/core/error.h"

namespace coat::train {

namespace {

// The process-wide state shared by the handlers and SignalInterrupts (the header says why it is global).
std::atomic<bool> g_installed{false};
std::atomic<int> g_stop_signal{0};  // the first stop signal's number; 0 before one
std::atomic<int64_t> g_stop_signals{0};
std::atomic<int64_t> g_save_signals{0};
std::atomic<int64_t> g_step{0};
std::atomic<int64_t> g_saved_step{-1};
std::atomic<bool> g_saving{false};
static_assert(std::atomic<int64_t>::is_always_lock_free && std::atomic<int>::is_always_lock_free);

const char* signal_name(int signo) {
  switch (signo) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    case SIGUSR1:
      return "SIGUSR1";
    case SIGUSR2:
      return "SIGUSR2";
    default:
      return "a signal";
  }
}

// Async-signal-safe output to stderr (no allocation, no locks, no stdio).
class SignalSafeMessage {
 public:
  SignalSafeMessage& operator<<(const char* text) {
    for (; *text != '\0' && used_ < sizeof(buffer_) - 1; ++text) buffer_[used_++] = *text;
    return *this;
  }
  SignalSafeMessage& operator<<(int64_t value) {
    char digits[24];
    size_t n = 0;
    uint64_t magnitude = value < 0 ? 0 - static_cast<uint64_t>(value) : static_cast<uint64_t>(value);
    do {
      digits[n++] = static_cast<char>('0' + magnitude % 10);
      magnitude /= 10;
    } while (magnitude != 0);
    if (value < 0) *this << "-";
    while (n > 0 && used_ < sizeof(buffer_) - 1) buffer_[used_++] = digits[--n];
    return *this;
  }
  void write_to_stderr() {
    buffer_[used_++] = '\n';
    for (size_t done = 0; done < used_;) {
      const ssize_t w = ::write(STDERR_FILENO, buffer_ + done, used_ - done);
      if (w <= 0) return;
      done += static_cast<size_t>(w);
    }
  }

 private:
  char buffer_[512];
  size_t used_ = 0;
};

// What stopping now loses, from the trainer's last report.
void describe_loss(SignalSafeMessage& m) {
  const int64_t step = g_step.load(), saved = g_saved_step.load();
  if (g_saving.load())
    m << "the checkpoint of step " << step << " being written is lost (an incomplete one is never loaded); ";
  if (saved < 0 && step == 0) {
    m << "the first step, in progress, is lost";
  } else if (saved < 0) {
    m << "no checkpoint was written: step" << (step > 1 ? "s 1-" : " ") << step
      << " and the step in progress are lost";
  } else if (saved == step) {
    m << "the step in progress is lost; --resume auto continues from the checkpoint of step " << saved;
  } else {
    m << "steps " << saved + 1 << "-" << step
      << " and the step in progress are lost; --resume auto continues from "
      << "the checkpoint of step " << saved;
  }
}

void on_stop_signal(int signo) {
  const int saved_errno = errno;
  SignalSafeMessage m;
  if (g_stop_signals.fetch_add(1) == 0) {
    int none = 0;
    g_stop_signal.compare_exchange_strong(none, signo);
    m << "coat-train: " << signal_name(signo)
      << " received: stopping with a checkpoint after the step in progress"
      << " (a second stop signal stops at once, without saving)";
    m.write_to_stderr();
  } else {
    m << "coat-train: second stop signal (" << signal_name(signo) << "): stopping at once, without saving; ";
    describe_loss(m);
    m.write_to_stderr();
    // The default action ends the process once this handler returns (the signal is blocked until then).
    struct sigaction default_action {};
    default_action.sa_handler = SIG_DFL;
    sigemptyset(&default_action.sa_mask);
    sigaction(signo, &default_action, nullptr);
    raise(signo);
  }
  errno = saved_errno;
}

void on_save_signal(int signo) {
  const int saved_errno = errno;
  g_save_signals.fetch_add(1);
  SignalSafeMessage m;
  m << "coat-train: " << signal_name(signo)
    << " received: saving a checkpoint after the step in progress and going on";
  m.write_to_stderr();
  errno = saved_errno;
}

void install(int signo, void (*handler)(int), struct sigaction* previous) {
  struct sigaction action {};
  action.sa_handler = handler;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // reads, writes and MPI's waits go on after the handler
  if (sigaction(signo, &action, previous) != 0) {
    throw Error(detail::concat("[SignalInterrupts] sigaction(", signal_name(signo),
                               ") failed: ", std::strerror(errno)));
  }
}

}  // namespace

std::string_view to_string(Interrupt interrupt) {
  switch (interrupt) {
    case Interrupt::None:
      return "none";
    case Interrupt::Save:
      return "save";
    case Interrupt::Stop:
      return "stop";
    case Interrupt::Fail:
      return "fail";
  }
  return "?";
}

SignalInterrupts::SignalInterrupts() {
  if (g_installed.exchange(true)) {
    throw InvalidArgument("[SignalInterrupts] the signal handlers are installed already (one per process)");
  }
  g_stop_signal = 0;
  g_stop_signals = 0;
  g_save_signals = 0;
  g_step = 0;
  g_saved_step = -1;
  g_saving = false;
  try {
    install(SIGINT, on_stop_signal, &previous_int_);
    install(SIGTERM, on_stop_signal, &previous_term_);
    install(SIGUSR2, on_stop_signal, &previous_usr2_);
    install(SIGUSR1, on_save_signal, &previous_usr1_);
  } catch (...) {
    sigaction(SIGINT, &previous_int_, nullptr);
    sigaction(SIGTERM, &previous_term_, nullptr);
    sigaction(SIGUSR2, &previous_usr2_, nullptr);
    g_installed = false;
    throw;
  }
}

SignalInterrupts::~SignalInterrupts() {
  sigaction(SIGINT, &previous_int_, nullptr);
  sigaction(SIGTERM, &previous_term_, nullptr);
  sigaction(SIGUSR1, &previous_usr1_, nullptr);
  sigaction(SIGUSR2, &previous_usr2_, nullptr);
  g_installed = false;
}

Interrupt SignalInterrupts::poll() {
  if (g_stop_signals.load() > 0) return Interrupt::Stop;
  const int64_t saves = g_save_signals.load();
  if (saves == saves_seen_) return Interrupt::None;
  saves_seen_ = saves;
  return Interrupt::Save;
}

void SignalInterrupts::report(const RunProgress& progress) {
  g_saving = false;  // never "saving" a step it has not reached
  g_step = progress.step;
  g_saved_step = progress.saved_step;
  g_saving = progress.saving;
}

std::string_view SignalInterrupts::stop_reason() const {
  const int signo = g_stop_signal.load();
  return signo == 0 ? std::string_view() : std::string_view(signal_name(signo));
}

}  // namespace coat::train
