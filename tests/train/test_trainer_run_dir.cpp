// The trainer and its run directory: interrupts (save and go on, stop with a checkpoint, agreed per step),
// one writer per directory, nothing written before the config, data and resumed checkpoint were checked, and
// a failed metrics write that stops the run after saving what it can.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "coat/data/token_file.h"
#include "coat/io/checkpoint.h"
#include "coat/ops/runtime.h"
#include "coat/train/trainer.h"
#include "small_run_test.h"
#include "expect_error.h"

namespace coat::train {
namespace {

namespace fs = std::filesystem;

/// Interrupts at given steps (polled after each step), and what the trainer reported.
class ScriptedInterrupts final : public InterruptSource {
 public:
  explicit ScriptedInterrupts(std::map<int64_t, Interrupt> at) : at_(std::move(at)) {}
  Interrupt poll() override {
    const auto it = at_.find(progress_.step);
    return it == at_.end() ? Interrupt::None : it->second;
  }
  void report(const RunProgress& progress) override {
    progress_ = progress;
    reports_.push_back(progress);
  }
  std::string_view stop_reason() const override { return "a test"; }
  const std::vector<RunProgress>& reports() const { return reports_; }

 private:
  std::map<int64_t, Interrupt> at_;
  RunProgress progress_;
  std::vector<RunProgress> reports_;
};

class TrainerRunDirTest : public SmallRunTest {
 protected:

  TrainConfig config(const std::string& run, int64_t max_steps = 6) const {
    nlohmann::json c = small_config(run);
    c["checkpoint"]["interval"] = 0;
    c["checkpoint"]["keep_last"] = 0;
    c["train"]["max_steps"] = max_steps;
    return parse_train_config(c, "c.json");
  }
  static std::string read(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  std::vector<int64_t> checkpoint_steps(const std::string& run) const {
    std::vector<int64_t> steps;
    for (const io::CheckpointInfo& c : io::list_checkpoints(dir_ / run)) {
      if (c.complete) steps.push_back(c.step);
    }
    return steps;
  }
  ContextPtr ctx_ = ops::make_context(Device::cpu());
};

TEST_F(TrainerRunDirTest, SaveGoesOnStopSavesAndTheResumeIsExact) {
  Trainer full(config("full"), ctx_);
  full.run();
  ScriptedInterrupts script({{2, Interrupt::Save}, {4, Interrupt::Stop}});
  {
    Trainer first(config("split"), ctx_);
    first.set_interrupts(&script);
    EXPECT_EQ(first.run(), RunEnd::Stopped);
    EXPECT_EQ(first.step(), 4);
  }
  EXPECT_EQ(checkpoint_steps("split"), (std::vector<int64_t>{2, 4}));
  // Around the save of step 4: "saving" while it is written, then saved.
  const auto& reports = script.reports();
  ASSERT_GE(reports.size(), 2u);
  EXPECT_TRUE(reports[reports.size() - 2].saving);
  EXPECT_EQ(reports.back().saved_step, 4);
  EXPECT_FALSE(reports.back().saving);
  Trainer second(config("split"), ctx_, /*resuming=*/true);
  second.load_checkpoint(*second.latest_checkpoint());
  EXPECT_EQ(second.run(), RunEnd::Finished);
  const std::vector<double> all = losses(full);
  EXPECT_EQ(losses(second), std::vector<double>(all.begin() + 4, all.end()));
  // metrics.jsonl: steps 1-6 once each (the stop wrote step 4's record before saving).
  std::istringstream lines(read(dir_ / "split" / "metrics.jsonl"));
  std::vector<int64_t> steps;
  for (std::string line; std::getline(lines, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("loss")) steps.push_back(j.at("step").get<int64_t>());
  }
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));
}

// The start-up clock given to the trainer: the first step of run() closes it, once; metrics.jsonl carries
// time_to_first_step_s on that step's record only, at least the sum of the phases marked before.
TEST_F(TrainerRunDirTest, TheFirstStepClosesTheStartupClock) {
  StartupClock clock("before");
  clock.mark("setup");
  Trainer t(config("run", 3), ctx_);
  t.set_startup_clock(&clock);
  t.run();
  ASSERT_EQ(clock.phases().size(), 3u);
  EXPECT_EQ(clock.phases().back().first, "step 1");
  std::istringstream lines(read(dir_ / "run" / "metrics.jsonl"));
  std::vector<int64_t> with_it;
  for (std::string line; std::getline(lines, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (!j.contains("time_to_first_step_s")) continue;
    with_it.push_back(j.at("step").get<int64_t>());
    EXPECT_GE(j.at("time_to_first_step_s").get<double>(),
              clock.phases()[0].second + clock.phases()[1].second + clock.phases()[2].second - 1e-3);
  }
  EXPECT_EQ(with_it, std::vector<int64_t>{1});
}

// A kill -9 while config.json is written leaves config.json.tmp.<pid> (found by scripts/chaos.sh): the next
// start removes it, under the run directory's lock.
TEST_F(TrainerRunDirTest, ATemporaryConfigOfAKilledRunIsRemoved) {
  {
    Trainer first(config("run", 2), ctx_);
    first.run();
  }
  std::ofstream(dir_ / "run" / "config.json.tmp.4242") << "{\"model\": {";
  Trainer resumed(config("run", 3), ctx_, /*resuming=*/true);
  resumed.run();
  EXPECT_FALSE(fs::exists(dir_ / "run" / "config.json.tmp.4242"));
  EXPECT_TRUE(fs::exists(dir_ / "run" / "config.json"));
}

TEST_F(TrainerRunDirTest, StopAtTheLastStepFinishes) {
  ScriptedInterrupts script({{6, Interrupt::Stop}});
  Trainer t(config("run"), ctx_);
  t.set_interrupts(&script);
  EXPECT_EQ(t.run(), RunEnd::Finished);
  EXPECT_EQ(checkpoint_steps("run"), (std::vector<int64_t>{6}));
}

TEST_F(TrainerRunDirTest, OneWriterPerRunDirectory) {
  Trainer a(config("run"), ctx_);
  a.run(2);  // holds the lock while it lives
  Trainer b(config("run"), ctx_, /*resuming=*/true);
  const std::string holder = "locked by pid " + std::to_string(getpid()) + " on host ";
  test::expect_error_containing<io::DirectoryLocked>([&] { b.lock_run_dir(); }, holder);
  test::expect_error_containing<io::DirectoryLocked>([&] { b.run(); }, holder);
  const std::string metrics = read(dir_ / "run" / "metrics.jsonl");
  { Trainer released = std::move(b); }
  Trainer c(config("other"), ctx_);
  EXPECT_NO_THROW(c.lock_run_dir());  // no directory yet: nothing to lock, nothing created
  EXPECT_FALSE(fs::exists(dir_ / "other"));
  EXPECT_EQ(read(dir_ / "run" / "metrics.jsonl"), metrics);
}

TEST_F(TrainerRunDirTest, NothingIsWrittenBeforeRunAndARejectedResumeChangesNothing) {
  { Trainer fresh(config("fresh"), ctx_); }
  EXPECT_FALSE(fs::exists(dir_ / "fresh"));  // constructed and dropped: no directory
  {
    Trainer a(config("run", 3), ctx_);
    a.run();  // a checkpoint of step 3
  }
  const std::string config_json = read(dir_ / "run" / "config.json"),
                    metrics = read(dir_ / "run" / "metrics.jsonl");
  TrainConfig other = config("run");
  nlohmann::json doc = other.resolved;
  doc["model"]["hidden_size"] = 48;
  Trainer b(parse_train_config(doc, "other.json"), ctx_, /*resuming=*/true);
  b.lock_run_dir();
  const std::optional<fs::path> latest = b.latest_checkpoint();
  ASSERT_TRUE(latest.has_value());
  test::expect_error_containing<ConfigError>([&] { b.load_checkpoint(*latest); }, "another model");
  EXPECT_EQ(read(dir_ / "run" / "config.json"), config_json);
  EXPECT_EQ(read(dir_ / "run" / "metrics.jsonl"), metrics);
}

TEST_F(TrainerRunDirTest, FailedMetricsWriteStopsAfterSavingAndNamesTheFile) {
  fs::create_directories(dir_ / "full");
  fs::create_symlink("/dev/full", dir_ / "full" / "metrics.jsonl");  // every write: ENOSPC
  Trainer t(config("full"), ctx_, /*resuming=*/true);
  test::expect_error_containing<IoError>(
      [&] { t.run(); },
      "cannot write metrics file '" + (dir_ / "full" / "metrics.jsonl").string() +
          "': No space left on device (the record of step 1 was not written); stopped after step 1; "
          "a checkpoint of step 1 was saved");
  EXPECT_EQ(checkpoint_steps("full"), (std::vector<int64_t>{1}));
}

}  // namespace
}  // namespace coat::train
