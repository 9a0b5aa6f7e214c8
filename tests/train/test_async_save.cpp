// Checkpoints saved while training goes on (checkpoint.async, train/async_saver.h), in one process: the
// saver writes the copy taken at its start and commits only when told the write is done; a failed write
// throws at the commit naming the file and the OS error and leaves the complete checkpoints alone; through
// the trainer, async and synchronous saves write the same rank files, a run resumes from an async save
// exactly as the uninterrupted synchronous run, training is blocked only for the copy, and a failed
// background write stops the run at the step where it is found. The same over several ranks: tests/dist.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <random>
#include <thread>

#include "coat/data/token_file.h"
#include "coat/io/checkpoint.h"
#include "coat/io/checkpoint_manifest.h"
#include "coat/io/checkpoint_reader.h"
#include "coat/io/tensor_file.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/runtime.h"
#include "coat/train/async_saver.h"
#include "coat/train/trainer.h"
#include "small_run_test.h"
#include "coat/train/unit_state.h"
#include "expect_error.h"

namespace coat::train {
namespace {

namespace fs = std::filesystem;
using Tensors = std::vector<std::pair<std::string, Tensor>>;

class AsyncSave : public SmallRunTest {
 protected:

  /// configs/test_small.json (6 steps, saves at 3 and 6) in run directory `run`, adjusted by `set`.
  TrainConfig config(const std::string& run, const std::function<void(nlohmann::json&)>& set = {}) const {
    nlohmann::json c = small_config(run);
    c["train"]["eval_interval"] = 0;
    if (set) set(c);
    return parse_train_config(c, "c.json");
  }
  fs::path checkpoint(const std::string& run, int64_t step) const {
    return io::checkpoints_root(dir_ / run) / io::checkpoint_dir_name(step);
  }
  /// The directories under the run's checkpoints directory.
  std::vector<std::string> checkpoint_entries(const std::string& run) const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(io::checkpoints_root(dir_ / run)))
      out.push_back(e.path().filename());
    std::sort(out.begin(), out.end());
    return out;
  }
  static std::string file_bytes(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
  /// The records of the run's metrics.jsonl.
  std::vector<nlohmann::json> metrics(const std::string& run) const {
    std::ifstream in(dir_ / run / "metrics.jsonl");
    std::vector<nlohmann::json> out;
    for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
    return out;
  }
  /// A snapshot of trainer `t`'s state at its step, as the trainer makes it (views of the live state).
  static CheckpointSnapshot snapshot_of(Trainer& t) {
    CheckpointSnapshot s;
    s.step = t.step();
    s.meta = {{"world_size", 1}};
    s.layout = checkpoint_layout(t.model().store(), t.optimizer());
    s.file = 0;
    s.tensors = checkpoint_slices(t.model().store(), t.optimizer());
    return s;
  }
  /// Deep copies of `tensors`.
  static Tensors copies(const Tensors& tensors) {
    Tensors out;
    for (const auto& [name, t] : tensors) out.emplace_back(name, ops::clone(t));
    return out;
  }
  static bool same_bytes(const Tensor& a, const Tensor& b) {
    const Tensor x = ops::contiguous(a), y = ops::contiguous(b);
    return x.dtype() == y.dtype() && x.nbytes() == y.nbytes() &&
           std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()) == 0;
  }

  ContextPtr ctx_ = ops::make_context(Device::cpu());
};

/// A writer that removes the staging directory first: the write then fails as on a vanished directory.
io::RankFileRecord write_into_vanished_staging(const fs::path& staging, int file, const Tensors& tensors, const fs::path& recycle) {
  fs::remove_all(staging);
  return io::write_checkpoint_rank(staging, file, tensors, io::default_io_threads(), recycle);
}

TEST_F(AsyncSave, WritesTheCopyTakenAtItsStartAndCommitsWhenWritten) {
  Trainer t(config("run"), ctx_);
  t.run(/*stop_after_step=*/2);
  const CheckpointSnapshot snapshot = snapshot_of(t);
  const Tensors expected = copies(snapshot.tensors);
  std::promise<void> gate;
  std::shared_future<void> open = gate.get_future().share();
  AsyncSaver saver(dir_ / "run", nullptr, ctx_, ops::host_staging_context(ctx_), 0,
                   [open](const fs::path& staging, int file, const Tensors& tensors, const fs::path& recycle) {
                     open.wait();
                     return io::write_checkpoint_rank(staging, file, tensors, io::default_io_threads(), recycle);
                   });
  const SaveStarted started = saver.start(snapshot);
  EXPECT_EQ(started.step, 2);
  uint64_t state_bytes = 0;
  for (const auto& [name, tensor] : expected) state_bytes += tensor.nbytes();
  EXPECT_EQ(started.snapshot_bytes, state_bytes);
  EXPECT_GE(saver.host_bytes(), state_bytes);
  EXPECT_GE(ctx_->allocator().memory_report().current(MemoryCategory::CheckpointSnapshot), state_bytes);
  // Training changes the live state while the write waits: the file holds the state of the start.
  for (const auto& [name, tensor] : snapshot.tensors) {
    Tensor live = tensor;
    ops::fill_(live, 0.0);
  }
  EXPECT_EQ(saver.poll(), std::nullopt);  // still writing: nothing committed, nothing waited for
  EXPECT_TRUE(saver.pending());
  EXPECT_EQ(checkpoint_entries("run"), (std::vector<std::string>{"step_00000002.tmp"}));
  EXPECT_THROW(saver.start(snapshot_of(t)), InvalidArgument);  // one save in flight at a time
  gate.set_value();
  while (!saver.written()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const std::optional<SaveCommitted> committed = saver.poll();
  ASSERT_TRUE(committed.has_value());
  EXPECT_EQ(committed->dir, checkpoint("run", 2));
  EXPECT_EQ(committed->bytes, fs::file_size(checkpoint("run", 2) / "rank_00000.bin"));
  EXPECT_FALSE(saver.pending());
  io::CheckpointReader::open(checkpoint("run", 2)).verify_all();
  const io::TensorFileReader file = io::TensorFileReader::open(checkpoint("run", 2) / "rank_00000.bin");
  for (const auto& [name, tensor] : expected) EXPECT_TRUE(same_bytes(file.read(name), tensor)) << name;
  EXPECT_EQ(saver.finish(), std::nullopt);  // nothing in flight
}

// keep_last 1: the commit of the second save retires the first (renamed step_N.trash at once, out of the
// checkpoints a resume sees) and a thread of the saver deletes it; wait_for_removals returns once it is gone.
TEST_F(AsyncSave, TheCommitRetiresOldCheckpointsAndDeletesThemOffTheTrainingThread) {
  Trainer t(config("run", [](nlohmann::json& c) { c["checkpoint"]["interval"] = 0; }), ctx_);
  t.run(/*stop_after_step=*/2);
  AsyncSaver saver(dir_ / "run", nullptr, ctx_, ops::host_staging_context(ctx_), 1);
  saver.start(snapshot_of(t));
  ASSERT_TRUE(saver.finish().has_value());
  t.run(/*stop_after_step=*/3);
  saver.start(snapshot_of(t));
  const std::optional<SaveCommitted> second = saver.finish();
  ASSERT_TRUE(second.has_value());
  // Whatever the deleting thread has done so far, step 2 is no checkpoint any more.
  std::vector<int64_t> complete;
  for (const io::CheckpointInfo& c : io::list_checkpoints(dir_ / "run"))
    if (c.complete) complete.push_back(c.step);
  EXPECT_EQ(complete, (std::vector<int64_t>{3}));
  EXPECT_FALSE(fs::exists(checkpoint("run", 2)));
  saver.wait_for_removals();
  // Only its rank file is left, for the next save to overwrite; the end of the run deletes it.
  const fs::path trash = fs::path(checkpoint("run", 2)) += ".trash";
  EXPECT_EQ(saver.recycle_dir(), trash);
  EXPECT_EQ(checkpoint_entries("run"), (std::vector<std::string>{"step_00000002.trash", "step_00000003"}));
  std::vector<std::string> kept;
  for (const auto& e : fs::directory_iterator(trash)) kept.push_back(e.path().filename());
  EXPECT_EQ(kept, (std::vector<std::string>{"rank_00000.bin"}));
  io::CheckpointReader::open(checkpoint("run", 3)).verify_all();
  saver.finish_removals();
  EXPECT_EQ(checkpoint_entries("run"), (std::vector<std::string>{"step_00000003"}));
  EXPECT_TRUE(saver.recycle_dir().empty());
  saver.finish_removals();  // nothing left to do
}

// Saving every step with keep_last 1: the first two saves overwrite the two spare files reserved at the start,
// and from the third save on each writer overwrites the rank file of the checkpoint the last commit retired
// (the same inode) instead of a new file; the files are those of synchronous saves byte for byte, and the end
// of the run leaves only the last checkpoint.
TEST_F(AsyncSave, TheNextSaveOverwritesTheRetiredRankFileInPlace) {
  const auto every_step = [](bool async) {
    return [async](nlohmann::json& c) {
      c["checkpoint"]["interval"] = 1;
      c["checkpoint"]["keep_last"] = 1;
      c["checkpoint"]["async"] = async;
    };
  };
  {
    Trainer sync(config("run", every_step(false)), ctx_);
    sync.run();
  }
  fs::rename(dir_ / "run", dir_ / "sync");
  std::map<int64_t, ino_t> recycled_inode;  // save step -> inode of the file it took over
  Trainer whole(config("run", every_step(true)), ctx_);
  std::map<int64_t, ino_t> whole_inode;  // save step -> its rank file's inode
  whole.set_rank_file_writer([&](const fs::path& staging, int file, const Tensors& tensors, const fs::path& recycle) {
    struct stat st {};
    // The staging directory names the save's step (the trainer's own step has moved on meanwhile).
    const int64_t step = std::stoll(staging.filename().string().substr(5));
    if (!recycle.empty() && ::stat(recycle.c_str(), &st) == 0) recycled_inode[step] = st.st_ino;
    const io::RankFileRecord r = io::write_checkpoint_rank(staging, file, tensors, io::default_io_threads(), recycle);
    if (::stat((staging / io::checkpoint_rank_file_name(file)).c_str(), &st) == 0) whole_inode[step] = st.st_ino;
    return r;
  });
  whole.run();
  // Saves 1 and 2 take over the spare files reserved at the start (keep_last + 1 of them); save 3 takes over
  // save 1's file (retired when save 2 was committed), ...
  ASSERT_EQ(recycled_inode.size(), 6u);
  EXPECT_EQ(recycled_inode[1], whole_inode[1]);
  EXPECT_EQ(recycled_inode[2], whole_inode[2]);
  EXPECT_NE(whole_inode[1], whole_inode[2]);
  for (int64_t step = 3; step <= 6; ++step) {
    ASSERT_TRUE(recycled_inode.count(step)) << step;
    EXPECT_EQ(recycled_inode[step], whole_inode[step - 2]) << "save " << step;
    EXPECT_EQ(whole_inode[step], whole_inode[step - 2]) << "save " << step;
  }
  EXPECT_EQ(checkpoint_entries("run"), (std::vector<std::string>{"step_00000006"}));
  EXPECT_EQ(file_bytes(checkpoint("run", 6) / "rank_00000.bin"), file_bytes(checkpoint("sync", 6) / "rank_00000.bin"));
  EXPECT_NO_THROW(io::CheckpointReader::open(checkpoint("run", 6)).verify_all());
}

// The next save's writer starts only once the checkpoint the last commit retired is deleted, all but the rank
// file it takes over (on a full tmpfs the 7B's third save failed to reserve its 41.7 GB while the first was
// still being freed). A retired checkpoint of 30,000 files takes a while to delete; the writer checks they
// are gone and that it was given the retired rank file.
TEST_F(AsyncSave, TheNextWriteWaitsForTheRetiredCheckpointToBeDeleted) {
  Trainer t(config("run", [](nlohmann::json& c) { c["checkpoint"]["interval"] = 0; }), ctx_);
  t.run(/*stop_after_step=*/2);
  const fs::path trash = fs::path(checkpoint("run", 2)) += ".trash";
  std::atomic<int> writes{0};
  std::atomic<bool> trash_seen{false};
  fs::path third_recycles;
  AsyncSaver saver(dir_ / "run", nullptr, ctx_, ops::host_staging_context(ctx_), 1,
                   [&](const fs::path& staging, int file, const Tensors& tensors, const fs::path& recycle) {
                     if (++writes == 3) {
                       // All of the retired checkpoint is gone but the rank file this write takes over.
                       trash_seen = fs::exists(trash / "junk") || fs::exists(trash / io::kCheckpointCompleteMarker);
                       third_recycles = recycle;
                     }
                     return io::write_checkpoint_rank(staging, file, tensors, io::default_io_threads(), recycle);
                   });
  saver.start(snapshot_of(t));
  ASSERT_TRUE(saver.finish().has_value());
  const fs::path junk = checkpoint("run", 2) / "junk";
  fs::create_directories(junk);
  for (int i = 0; i < 30000; ++i) std::ofstream(junk / std::to_string(i)) << i;
  t.run(/*stop_after_step=*/3);
  saver.start(snapshot_of(t));
  ASSERT_TRUE(saver.finish().has_value());  // retires step 2; its deletion starts
  t.run(/*stop_after_step=*/4);
  saver.start(snapshot_of(t));
  ASSERT_TRUE(saver.finish().has_value());
  EXPECT_EQ(writes.load(), 3);
  EXPECT_FALSE(trash_seen.load());
  EXPECT_EQ(third_recycles, trash / io::checkpoint_rank_file_name(0));
  saver.finish_removals();
  EXPECT_EQ(checkpoint_entries("run"), (std::vector<std::string>{"step_00000004"}));
}

// Spares reserved beside the first steps: exactly the size of the rank file; the first save overwrites spare 0
// (its inode), the end of the run deletes the spare no save took. A spare that cannot be reserved is reported
// and the save writes a new file.
TEST_F(AsyncSave, SparesReservedAtTheStartServeTheFirstSaves) {
  Trainer t(config("run", [](nlohmann::json& c) { c["checkpoint"]["interval"] = 0; }), ctx_);
  t.run(/*stop_after_step=*/2);
  const CheckpointSnapshot snapshot = snapshot_of(t);
  const uint64_t bytes = io::tensor_file_bytes(snapshot.tensors);
  const fs::path spare0 = io::spare_rank_file_dir(dir_ / "run", 0, 0) / "rank_00000.bin";
  std::promise<std::pair<int, std::string>> reported;
  {
    AsyncSaver saver(dir_ / "run", nullptr, ctx_, ops::host_staging_context(ctx_), 1);
    saver.reserve_spares_in_background(2, 0, 0, bytes, [&](int reserved, double, const std::string& error) {
      reported.set_value({reserved, error});
    });
    EXPECT_EQ(reported.get_future().get(), (std::pair<int, std::string>{2, ""}));
    EXPECT_EQ(fs::file_size(spare0), bytes);
    struct stat st {};
    ASSERT_EQ(::stat(spare0.c_str(), &st), 0);
    const ino_t spare_inode = st.st_ino;
    saver.start(snapshot);
    ASSERT_TRUE(saver.finish().has_value());
    const fs::path written = checkpoint("run", 2) / "rank_00000.bin";
    ASSERT_EQ(::stat(written.c_str(), &st), 0);
    EXPECT_EQ(st.st_ino, spare_inode);
    EXPECT_EQ(fs::file_size(written), bytes);
    EXPECT_NO_THROW(io::CheckpointReader::open(checkpoint("run", 2)).verify_all());
    EXPECT_EQ(checkpoint_entries("run"), (std::vector<std::string>{"spare_1_0.trash", "step_00000002"}));
    saver.finish_removals();
    EXPECT_EQ(checkpoint_entries("run"), (std::vector<std::string>{"step_00000002"}));
  }
  // The spare's place is taken by a plain file: nothing is reserved, the save writes a new file.
  t.run(/*stop_after_step=*/3);
  std::ofstream(io::spare_rank_file_dir(dir_ / "run", 0, 0)) << "in the way";
  AsyncSaver saver(dir_ / "run", nullptr, ctx_, ops::host_staging_context(ctx_), 1);
  std::promise<std::pair<int, std::string>> failed;
  saver.reserve_spares_in_background(1, 0, 0, bytes, [&](int reserved, double, const std::string& error) {
    failed.set_value({reserved, error});
  });
  const auto [reserved, error] = failed.get_future().get();
  EXPECT_EQ(reserved, 0);
  EXPECT_NE(error.find("spare_0_0.trash"), std::string::npos) << error;
  saver.start(snapshot_of(t));
  ASSERT_TRUE(saver.finish().has_value());
  EXPECT_NO_THROW(io::CheckpointReader::open(checkpoint("run", 3)).verify_all());
}

/// A CPU context whose allocations fail (host memory that cannot be pinned).
class FailingHostContext final : public DeviceContext {
  struct Refusing final : Allocator {
    void* allocate(size_t bytes, MemoryCategory) override {
      throw OutOfMemory(detail::concat("refused ", bytes, " bytes"));
    }
    void deallocate(void*, size_t, MemoryCategory) override {}
    MemoryReport memory_report() const override { return {}; }
    void reset_peaks() override {}
  };
  Refusing allocator_;

 public:
  Device device() const override { return Device::cpu(); }
  Allocator& allocator() override { return allocator_; }
  void synchronize() override {}
};

TEST_F(AsyncSave, BuffersReservedInTheBackgroundServeTheFirstSave) {
  Trainer t(config("run"), ctx_);
  t.run(/*stop_after_step=*/2);
  const CheckpointSnapshot snapshot = snapshot_of(t);
  const Tensors expected = copies(snapshot.tensors);
  uint64_t state_bytes = 0;
  for (const auto& [name, tensor] : expected) state_bytes += tensor.nbytes();
  AsyncSaver saver(dir_ / "run", nullptr, ctx_, ctx_, 0);
  std::atomic<int> calls{0};
  std::atomic<uint64_t> reported{0};
  saver.reserve_in_background(snapshot.tensors, [&](uint64_t bytes, double seconds) {
    EXPECT_GE(seconds, 0.0);
    reported = bytes;
    ++calls;
  });
  EXPECT_EQ(saver.host_bytes(), state_bytes);  // planned, whether or not the thread is done
  EXPECT_THROW(saver.reserve_in_background(snapshot.tensors), InvalidArgument);  // once
  while (calls.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const uint64_t allocations = ctx_->allocator().memory_report().system_allocations;
  const SaveStarted started = saver.start(snapshot);
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(reported.load(), state_bytes);
  // The snapshot went into the reserved buffers: nothing else was allocated.
  EXPECT_EQ(ctx_->allocator().memory_report().system_allocations, allocations);
  EXPECT_EQ(ctx_->allocator().memory_report().current(MemoryCategory::CheckpointSnapshot), state_bytes);
  EXPECT_EQ(started.snapshot_bytes, state_bytes);
  ASSERT_TRUE(saver.finish().has_value());
  const io::TensorFileReader file = io::TensorFileReader::open(checkpoint("run", 2) / "rank_00000.bin");
  for (const auto& [name, tensor] : expected) EXPECT_TRUE(same_bytes(file.read(name), tensor)) << name;
}

TEST_F(AsyncSave, AReservationThatFailedIsAnErrorAtTheFirstSave) {
  Trainer t(config("run"), ctx_);
  t.run(/*stop_after_step=*/2);
  AsyncSaver saver(dir_ / "run", nullptr, ctx_, std::make_shared<FailingHostContext>(), 0);
  saver.reserve_in_background(snapshot_of(t).tensors);
  test::expect_error_containing<IoError>([&] { saver.start(snapshot_of(t)); },
                                        "of host memory for the snapshots: refused");
}

TEST_F(AsyncSave, AFailedWriteThrowsAtTheCommitNamingTheFileAndKeepsTheCompleteCheckpoints) {
  Trainer t(config("run"), ctx_);
  t.run(/*stop_after_step=*/3);  // step 3 complete
  t.run(/*stop_after_step=*/4);
  AsyncSaver saver(dir_ / "run", nullptr, ctx_, ops::host_staging_context(ctx_), 0,
                   write_into_vanished_staging);
  saver.start(snapshot_of(t));
  test::expect_error_containing<IoError>([&] { saver.finish(); }, "rank_00000.bin");
  EXPECT_FALSE(saver.pending());
  saver.start(snapshot_of(t));
  try {
    saver.finish();
    ADD_FAILURE() << "the failed write was not reported";
  } catch (const IoError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("checkpoint of step 4"), std::string::npos) << what;
    EXPECT_NE(what.find("No such file or directory"), std::string::npos) << what;  // the OS error
  }
  EXPECT_EQ(checkpoint_entries("run"), (std::vector<std::string>{"step_00000003"}));
  EXPECT_NO_THROW(io::CheckpointReader::open(checkpoint("run", 3)).verify_all());
}

// The same run saved synchronously on one I/O thread and in the background on three: the same rank files byte
// for byte (meta.json differs only in checkpoint.async and io_threads themselves), the blocked and written
// figures in metrics.jsonl, and a resume (verified and loaded on three threads) from the background save
// continues exactly as the synchronous run went on.
TEST_F(AsyncSave, AsyncAndSyncSavesWriteTheSameFilesAndResumeTheSame) {
  // Both runs in the same run directory (its path is in meta.json), moved aside when done.
  const auto sync = [](nlohmann::json& c) {
    c["checkpoint"]["async"] = false;
    c["checkpoint"]["io_threads"] = 1;
  };
  const auto three = [](nlohmann::json& c) { c["checkpoint"]["io_threads"] = 3; };
  std::vector<double> all;
  {
    Trainer full(config("run", sync), ctx_);
    full.run();
    all = losses(full);
  }
  fs::rename(dir_ / "run", dir_ / "sync");
  {
    Trainer split(config("run", three), ctx_);
    ASSERT_TRUE(split.config().checkpoint.async);  // the default
    split.run(/*stop_after_step=*/3);
  }
  {
    Trainer resumed(config("run", three), ctx_, /*resuming=*/true);
    resumed.load_checkpoint(checkpoint("run", 3));
    resumed.run();
    EXPECT_EQ(losses(resumed), std::vector<double>(all.begin() + 3, all.end()));
  }
  fs::rename(dir_ / "run", dir_ / "async");
  for (const int64_t step : {3, 6}) {
    EXPECT_EQ(file_bytes(checkpoint("sync", step) / "rank_00000.bin"),
              file_bytes(checkpoint("async", step) / "rank_00000.bin"))
        << "step " << step;
    nlohmann::json a = io::CheckpointReader::open(checkpoint("async", step)).meta();
    nlohmann::json s = io::CheckpointReader::open(checkpoint("sync", step)).meta();
    EXPECT_EQ(a["config"]["checkpoint"]["async"], true);
    EXPECT_EQ(a["config"]["checkpoint"]["io_threads"], 3);
    EXPECT_EQ(s["config"]["checkpoint"]["io_threads"], 1);
    for (const char* key : {"async", "io_threads"}) {
      a["config"]["checkpoint"].erase(key);
      s["config"]["checkpoint"].erase(key);
    }
    EXPECT_EQ(a, s) << "step " << step;
  }
  // Each save's blocked time at its step, and where it was committed its write.
  for (const std::string run : {"sync", "async"}) {
    std::map<int64_t, double> blocked;
    std::map<int64_t, uint64_t> written_bytes;
    for (const nlohmann::json& r : metrics(run)) {
      if (r.contains("save_blocked_s")) blocked[r["step"].get<int64_t>()] = r["save_blocked_s"].get<double>();
      if (r.contains("save_step")) {
        EXPECT_GE(r["step"].get<int64_t>(), r["save_step"].get<int64_t>()) << run;
        EXPECT_GT(r["save_written_s"].get<double>(), 0.0) << run;
        written_bytes[r["save_step"].get<int64_t>()] = r["save_bytes"].get<uint64_t>();
      }
    }
    EXPECT_EQ(blocked.size(), 2u) << run;
    EXPECT_TRUE(blocked.count(3) && blocked.count(6)) << run;
    EXPECT_EQ(written_bytes.size(), 2u) << run;
    for (const auto& [step, bytes] : written_bytes) {
      EXPECT_EQ(bytes, fs::file_size(checkpoint(run, step) / "rank_00000.bin")) << run << " step " << step;
    }
  }
}

// A write that takes half a second: training does not wait for it at the save (only for the copy), it is
// committed at a later step, and the next save waits for it.
TEST_F(AsyncSave, TrainingGoesOnWhileTheWriteRuns) {
  static constexpr double kWriteSeconds = 0.5;
  Trainer t(config("run", [](nlohmann::json& c) { c["checkpoint"]["interval"] = 2; }), ctx_);
  t.set_rank_file_writer([](const fs::path& staging, int file, const Tensors& tensors, const fs::path& recycle) {
    std::this_thread::sleep_for(std::chrono::duration<double>(kWriteSeconds));
    return io::write_checkpoint_rank(staging, file, tensors, io::default_io_threads(), recycle);
  });
  t.run();
  std::map<int64_t, double> blocked;
  std::map<int64_t, int64_t> committed_at;
  for (const nlohmann::json& r : metrics("run")) {
    if (r.contains("save_blocked_s")) blocked[r["step"].get<int64_t>()] = r["save_blocked_s"].get<double>();
    if (r.contains("save_step")) {
      committed_at[r["save_step"].get<int64_t>()] = r["step"].get<int64_t>();
      EXPECT_GE(r["save_written_s"].get<double>(), kWriteSeconds);
    }
  }
  ASSERT_EQ(blocked.size(), 3u);
  for (const auto& [step, seconds] : blocked) EXPECT_LT(seconds, kWriteSeconds) << "step " << step;
  // Committed at a step boundary after the save, at the latest by the next save (or the end of the run).
  ASSERT_EQ(committed_at.size(), 3u);
  for (const auto& [step, at] : committed_at) {
    EXPECT_GE(at, std::min<int64_t>(step + 1, 6)) << "step " << step;
    EXPECT_LE(at, std::min<int64_t>(step + 2, 6)) << "step " << step;
  }
  EXPECT_EQ(checkpoint_entries("run"),
            (std::vector<std::string>{"step_00000004", "step_00000006"}));  // keep_last 2
}

TEST_F(AsyncSave, AFailedBackgroundWriteStopsTheRunAndKeepsThePreviousCheckpoint) {
  Trainer t(config("run", [](nlohmann::json& c) { c["checkpoint"]["interval"] = 2; }), ctx_);
  t.set_rank_file_writer([](const fs::path& staging, int file, const Tensors& tensors, const fs::path& recycle) {
    if (staging.filename() == "step_00000004.tmp") return write_into_vanished_staging(staging, file, tensors, recycle);
    return io::write_checkpoint_rank(staging, file, tensors, io::default_io_threads(), recycle);
  });
  try {
    t.run();
    ADD_FAILURE() << "the run went on after a failed write";
  } catch (const IoError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("checkpoint of step 4"), std::string::npos) << what;
    EXPECT_NE(what.find((checkpoint("run", 4).string() + ".tmp/rank_00000.bin")), std::string::npos) << what;
    EXPECT_NE(what.find("No such file or directory"), std::string::npos) << what;
  }
  // Found at a step boundary after step 4, at the latest before the save of step 6 started.
  EXPECT_GE(t.step(), 5);
  EXPECT_LE(t.step(), 6);
  EXPECT_EQ(checkpoint_entries("run"), (std::vector<std::string>{"step_00000002"}));
  EXPECT_NO_THROW(io::CheckpointReader::open(checkpoint("run", 2)).verify_all());
}

}  // namespace
}  // namespace coat::train
