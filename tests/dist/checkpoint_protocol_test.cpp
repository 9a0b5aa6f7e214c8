// The checkpoint protocol over the ranks of a job (every world size of the CI entries): a rank whose file
// cannot be written, or a commit that fails on rank 0, fails the save on every rank and leaves nothing
// behind; saves in the background commit on every rank with the bytes of synchronous ones, and a failed
// background write stops every rank at the same step; a damaged rank file (found by the rank that verifies
// it, reported to all) or an edited meta.json makes --resume auto rename the checkpoint step_N.corrupt and
// take the one before, on every rank alike; a resume checksums each byte once over the ranks; the
// tools' loader (load_model), the reader's whole state tensors and train.init_from (sharded or not) read a
// checkpoint of this world size as the live state it was saved from.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <thread>

#include "coat/dist/host_collectives.h"
#include "coat/io/checkpoint_manifest.h"
#include "coat/io/checkpoint_reader.h"
#include "coat/io/tensor_file.h"
#include "coat/ops/copy.h"
#include "coat/train/checkpoint_save.h"
#include "coat/train/model_loader.h"
#include "coat/train/resume.h"
#include "coat/train/trainer.h"
#include "coat/train/unit_state.h"
#include "training_job.h"

namespace coat::train {
namespace {

class CheckpointProtocol : public TrainingJob {
 protected:
  void SetUp() override {
    TrainingJob::SetUp();
    comm_ = dist::make_communicator(test::world(), Device::cpu());
  }
  int world() const { return test::world().world_size(); }
  bool root() const { return test::world().rank() == 0; }
  /// What run `run`'s checkpoints directory holds once every rank is done with the save before, as every rank
  /// sees it before any rank goes on.
  std::vector<fs::path> checkpoints(const std::string& run = "run") const {
    sleepy_barrier(test::world());
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(io::checkpoints_root(dir_ / run)))
      out.push_back(e.path().filename());
    std::sort(out.begin(), out.end());
    sleepy_barrier(test::world());
    return out;
  }
  static void flip_byte(const fs::path& file, uint64_t at) {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(at));
    char c = 0;
    f.get(c);
    f.seekp(static_cast<std::streamoff>(at));
    f.put(static_cast<char>(c ^ 0x40));
  }
  const std::function<void(nlohmann::json&)> plain_ = [](nlohmann::json&) {};
  std::unique_ptr<dist::Communicator> comm_;
};

TEST_F(CheckpointProtocol, AFailedWriteOrCommitFailsEveryRankAndLeavesNothing) {
  Trainer t(config(dir_ / "run", plain_, world()), ctx_, false, comm_.get());
  t.run(/*stop_after_step=*/3);  // step 3 saved
  sleepy_barrier(test::world());
  CheckpointSnapshot snapshot;
  snapshot.step = 4;
  snapshot.meta = {{"world_size", world()}};
  snapshot.layout = checkpoint_layout(t.model().store(), t.optimizer());
  snapshot.file = test::world().rank();
  snapshot.tensors = checkpoint_slices(t.model().store(), t.optimizer());
  // The last rank cannot write its file.
  CheckpointSnapshot broken = snapshot;
  if (test::world().rank() == world() - 1) broken.tensors.emplace_back("undefined", Tensor());
  try {
    save_checkpoint_collectively(dir_ / "run", broken, comm_.get(), ctx_, 0);
    ADD_FAILURE() << "the save succeeded";
  } catch (const Error& e) {
    const std::string what = e.what();
    const std::string expected = test::world().rank() == world() - 1
                                     ? "'undefined' is undefined"
                                     : "rank " + std::to_string(world() - 1) + " could not write its file";
    EXPECT_NE(what.find(expected), std::string::npos) << what;
  }
  EXPECT_EQ(checkpoints(), std::vector<fs::path>{"step_00000003"});
  // Rank 0's commit fails (its meta contradicts the step): every rank throws, nothing is left.
  CheckpointSnapshot contradicting = snapshot;
  contradicting.meta["step"] = 5;
  EXPECT_THROW(save_checkpoint_collectively(dir_ / "run", contradicting, comm_.get(), ctx_, 0), Error);
  EXPECT_EQ(checkpoints(), std::vector<fs::path>{"step_00000003"});
  // The same snapshot, intact, saves.
  EXPECT_EQ(save_checkpoint_collectively(dir_ / "run", snapshot, comm_.get(), ctx_, 0).dir,
            io::checkpoints_root(dir_ / "run") / "step_00000004");
  EXPECT_NO_THROW(
      io::CheckpointReader::open(io::checkpoints_root(dir_ / "run") / "step_00000004").verify_all());
}

/// The bytes of a file.
std::string file_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Saves in the background (checkpoint.async, the default) over every rank, the last rank writing slowest so
// that the ranks' per-step polls disagree for a while: every save commits once, on every rank, with the
// bytes of a synchronous save. A background write that fails on the last rank stops the run on every rank at
// the same step, and the checkpoint before it stays complete.
TEST_F(CheckpointProtocol, AsyncSavesCommitOnEveryRank) {
  using Tensors = std::vector<std::pair<std::string, Tensor>>;
  const bool last = test::world().rank() == world() - 1;
  const auto every_two = [](nlohmann::json& c) { c["checkpoint"]["interval"] = 2; };
  {
    const auto sync = [&](nlohmann::json& c) {
      every_two(c);
      c["checkpoint"]["async"] = false;
    };
    Trainer t(config(dir_ / "sync", sync, world()), ctx_, false, comm_.get());
    t.run();
  }
  {
    Trainer t(config(dir_ / "async", every_two, world()), ctx_, false, comm_.get());
    if (last) {
      t.set_rank_file_writer([](const fs::path& staging, int file, const Tensors& tensors, const fs::path& recycle) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        return io::write_checkpoint_rank(staging, file, tensors, io::default_io_threads(), recycle);
      });
    }
    t.run();
  }
  EXPECT_EQ(checkpoints("async"), (std::vector<fs::path>{"step_00000002", "step_00000004", "step_00000006"}));
  for (const int64_t step : {2, 4, 6}) {
    // Rank r compares its own file (each rank sees the same directory).
    const std::string name = io::checkpoint_rank_file_name(test::world().rank());
    const fs::path async_dir = checkpoint(dir_ / "async", step);
    EXPECT_EQ(file_bytes(async_dir / name), file_bytes(checkpoint(dir_ / "sync", step) / name))
        << "step " << step;
    EXPECT_NO_THROW(io::CheckpointReader::open(async_dir).verify_all()) << "step " << step;
  }
  Trainer t(config(dir_ / "failing", every_two, world()), ctx_, false, comm_.get());
  if (last) {
    // Its file goes into a directory that does not exist (the staging directory is the other ranks' too).
    t.set_rank_file_writer([](const fs::path& staging, int file, const Tensors& tensors, const fs::path& recycle) {
      const bool fail = staging.filename() == "step_00000004.tmp";
      return io::write_checkpoint_rank(fail ? staging / "missing" : staging, file, tensors, io::default_io_threads(), recycle);
    });
  }
  try {
    t.run();
    ADD_FAILURE() << "the run went on after a failed write";
  } catch (const IoError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("checkpoint of step 4"), std::string::npos) << what;
    const std::string expected = last ? "missing/" + io::checkpoint_rank_file_name(world() - 1)
                                      : "rank " + std::to_string(world() - 1) + " could not write its file";
    EXPECT_NE(what.find(expected), std::string::npos) << what;
    EXPECT_NE(what.find("No such file or directory"), std::string::npos) << what;
  }
  const std::vector<int64_t> steps = dist::all_gather_values(comm_.get(), ctx_, {t.step()});
  EXPECT_EQ(steps, std::vector<int64_t>(static_cast<size_t>(world()), t.step())) << "the ranks stopped apart";
  EXPECT_GE(t.step(), 5);
  EXPECT_EQ(checkpoints("failing"), std::vector<fs::path>{"step_00000002"});
}

// Saving every step with keep_last 1 over every rank: each rank's first two saves overwrite its own spare
// files and every later save the rank file of the checkpoint the last commit retired (rank 0 retires, every
// rank learns the directory); the files are those of synchronous saves, and the end leaves only the last
// checkpoint on every rank.
TEST_F(CheckpointProtocol, SavesOverwriteSparesAndRetiredRankFilesOnEveryRank) {
  using Tensors = std::vector<std::pair<std::string, Tensor>>;
  const auto every_step = [](bool async) {
    return [async](nlohmann::json& c) {
      c["checkpoint"]["interval"] = 1;
      c["checkpoint"]["keep_last"] = 1;
      c["checkpoint"]["async"] = async;
    };
  };
  {
    Trainer sync(config(dir_ / "sync", every_step(false), world()), ctx_, false, comm_.get());
    sync.run();
  }
  std::map<int64_t, fs::path> recycled;  // save step -> the file this rank's writer took over
  Trainer t(config(dir_ / "run", every_step(true), world()), ctx_, false, comm_.get());
  t.set_rank_file_writer([&](const fs::path& staging, int file, const Tensors& tensors, const fs::path& recycle) {
    const int64_t step = std::stoll(staging.filename().string().substr(5));
    if (!recycle.empty() && fs::exists(recycle)) recycled[step] = recycle;
    return io::write_checkpoint_rank(staging, file, tensors, io::default_io_threads(), recycle);
  });
  t.run();
  const int rank = test::world().rank();
  const int64_t last = t.step();
  ASSERT_EQ(static_cast<int64_t>(recycled.size()), last) << "rank " << rank;
  EXPECT_EQ(recycled[1], io::spare_rank_file_dir(dir_ / "run", 0, rank) / io::checkpoint_rank_file_name(rank));
  EXPECT_EQ(recycled[2], io::spare_rank_file_dir(dir_ / "run", 1, rank) / io::checkpoint_rank_file_name(rank));
  for (int64_t step = 3; step <= last; ++step) {
    fs::path retired = checkpoint(dir_ / "run", step - 2);
    retired += ".trash";
    EXPECT_EQ(recycled[step], retired / io::checkpoint_rank_file_name(rank)) << "save " << step;
  }
  EXPECT_EQ(checkpoints(), std::vector<fs::path>{io::checkpoint_dir_name(last)});
  const std::string name = io::checkpoint_rank_file_name(rank);
  EXPECT_EQ(file_bytes(checkpoint(dir_ / "run", last) / name), file_bytes(checkpoint(dir_ / "sync", last) / name));
  EXPECT_NO_THROW(io::CheckpointReader::open(checkpoint(dir_ / "run", last)).verify_all());
}

TEST_F(CheckpointProtocol, AutoSkipsADamagedRankFileOrMetaOnEveryRank) {
  const TrainConfig c = config(dir_ / "run", plain_, world());
  {
    Trainer t(c, ctx_, false, comm_.get());
    t.run();  // steps 3 and 6
  }
  sleepy_barrier(test::world());
  // The last rank file of step 6: the last rank verifies it, and its finding must reach every rank.
  if (root()) {
    const fs::path file = checkpoint(dir_ / "run", 6) / io::checkpoint_rank_file_name(world() - 1);
    const io::TensorFileReader reader = io::TensorFileReader::open(file);
    flip_byte(file, reader.entries().back().offset + reader.entries().back().bytes / 2);
  }
  sleepy_barrier(test::world());
  EXPECT_EQ(choose_resume_checkpoint("auto", c, comm_.get(), ctx_), checkpoint(dir_ / "run", 3));
  EXPECT_TRUE(fs::exists(io::checkpoints_root(dir_ / "run") / "step_00000006.corrupt"));
  sleepy_barrier(test::world());
  if (root()) flip_byte(checkpoint(dir_ / "run", 3) / "meta.json", 40);
  sleepy_barrier(test::world());
  EXPECT_EQ(choose_resume_checkpoint("auto", c, comm_.get(), ctx_), std::nullopt);
  EXPECT_EQ(checkpoints(), (std::vector<fs::path>{"step_00000003.corrupt", "step_00000006.corrupt"}));
}

/// The bytes of a checkpoint's rank files, as COMPLETE records them.
uint64_t rank_file_bytes(const fs::path& dir) {
  uint64_t bytes = 0;
  for (const io::ManifestFile& f : io::read_manifest(dir).files) bytes += f.bytes;
  return bytes;
}

// A resume checksums each byte once over all ranks: each rank verifies its share of the rank files whole, and
// the load reads files other ranks verified without checksumming them again. Saved on every rank and resumed
// on every rank, on one rank (which reads every file), and saved on one rank and resumed on every rank (which
// all read the one file).
TEST_F(CheckpointProtocol, AResumeChecksumsEachByteOnceOverTheRanks) {
  const auto train_to_3 = [&](const std::string& run, int ranks) {
    on_first_ranks(ranks, [&](dist::Communicator& comm) {
      Trainer t(config(dir_ / run, plain_, ranks), ctx_, false, &comm);
      t.run(/*stop_after_step=*/3);
    });
  };
  int resumes = 0;
  const auto resume = [&](const std::string& run, int ranks) {
    const fs::path resumed = dir_ / ("resume" + std::to_string(++resumes));
    copy_checkpoint(dir_ / run, 3, resumed);
    on_first_ranks(ranks, [&](dist::Communicator& comm) {
      const TrainConfig c = config(resumed, plain_, ranks);
      const std::optional<io::CheckpointReader> ck = open_resume_checkpoint("auto", c, &comm, ctx_);
      ASSERT_TRUE(ck.has_value());
      const auto verified = static_cast<int64_t>(ck->checksummed_bytes());
      Trainer t(c, ctx_, /*resuming=*/true, &comm);
      t.load_checkpoint(*ck);
      const std::vector<int64_t> before = dist::all_gather_values(&comm, ctx_, {verified});
      const std::vector<int64_t> after =
          dist::all_gather_values(&comm, ctx_, {static_cast<int64_t>(ck->checksummed_bytes())});
      EXPECT_EQ(after, before) << "the load checksummed bytes again, saved by " << run << ", on " << ranks;
      int64_t sum = 0;
      for (int64_t b : before) sum += b;
      EXPECT_EQ(sum, static_cast<int64_t>(rank_file_bytes(ck->dir()))) << run << " on " << ranks << " ranks";
      EXPECT_EQ(t.step(), 3);
    });
  };
  train_to_3("all", world());
  resume("all", world());
  resume("all", 1);
  train_to_3("one", 1);
  resume("one", world());
}

/// Bytes of two tensors (CPU) are equal.
bool same_bytes(const Tensor& a, const Tensor& b) {
  const Tensor x = ops::contiguous(a), y = ops::contiguous(b);
  return x.nbytes() == y.nbytes() && std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()) == 0;
}

TEST_F(CheckpointProtocol, ToolsAndInitFromReadAnyWorldSize) {
  const auto fp8_states = [](nlohmann::json& c) { c["optim"]["state_dtype"] = "fp8_expand"; };
  Trainer t(config(dir_ / "run", fp8_states, world()), ctx_, false, comm_.get());
  t.run(/*stop_after_step=*/3);
  sleepy_barrier(test::world());
  const LoadedModel whole =
      load_model(dir_ / "run", ctx_);  // coat-generate's, coat-convert's, coat-grads' way
  const io::CheckpointReader ck = io::CheckpointReader::open(checkpoint(dir_ / "run", 3));
  const models::UnitStore& store = t.model().store();
  for (size_t k = 0; k < store.units().size(); ++k) {
    const models::ParamUnit& u = store.units()[k];
    const models::UnitLayout& layout = store.layout(k);
    const int64_t begin = u.shard.begin, end = u.shard.begin + u.shard.owned;
    for (size_t i = 0; i < layout.params.size(); ++i) {
      const int64_t p_begin = layout.offsets[i], p_end = p_begin + shape_numel(layout.params[i].second);
      const int64_t lo = std::max(begin, p_begin), hi = std::min(end, p_end);
      if (lo >= hi) continue;
      const Tensor loaded = whole.model->store().units()[k].master.slice(0, lo, hi);
      EXPECT_TRUE(same_bytes(u.master.slice(0, lo - begin, hi - begin), loaded)) << layout.params[i].first;
    }
    // coat-optim-study's way: each unit's whole state; this rank's slice of it is its live state.
    for (const auto& [name, live] : t.optimizer().state_tensors()) {
      if (name.rfind(u.name + ".", 0) != 0) continue;
      const int64_t per_entry = name == u.name + ".exp_avg" || name == u.name + ".exp_avg_sq" ? 1 : 128;
      if (u.shard.owned == 0) continue;
      const io::EntrySpan span = io::entries_of_slice(begin, u.shard.owned, per_entry);
      const Tensor state = ck.read(name);
      EXPECT_TRUE(same_bytes(live.slice(0, 0, span.count), state.slice(0, span.first, span.end()))) << name;
    }
  }
  // train.init_from: a run of this world size and one process start from the saved masters.
  const auto init = [&](nlohmann::json& c) { c["train"]["init_from"] = (dir_ / "run").string(); };
  Trainer sharded(config(dir_ / "init", init, world()), ctx_, false, comm_.get());
  for (size_t k = 0; k < store.units().size(); ++k) {
    EXPECT_TRUE(same_bytes(sharded.model().store().units()[k].master, store.units()[k].master))
        << store.units()[k].name;
  }
  Trainer one(config(rank_dir_ / "one", init, 1), ctx_);
  for (size_t k = 0; k < store.units().size(); ++k) {
    EXPECT_TRUE(same_bytes(one.model().store().units()[k].master, whole.model->store().units()[k].master))
        << store.units()[k].name;
  }
}

}  // namespace
}  // namespace coat::train
