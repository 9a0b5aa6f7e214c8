// Checkpoint directories: layout, keep-last pruning, incomplete directories, refusal to overwrite, and the
// multi-rank protocol.
#include <gtest/gtest.h>

#include "expect_error.h"
#include "io_test_util.h"

#include "coat/core/error.h"
#include "coat/io/atomic_file.h"
#include "coat/io/checkpoint.h"
#include "coat/ops/creation.h"

namespace coat::io {
namespace {

using coat::test::expect_error_containing;
namespace fs = std::filesystem;

class CheckpointTest : public test::TempDirTest {
 protected:
  std::vector<std::pair<std::string, Tensor>> tensors(double start) {
    return {{"model.embed_tokens.weight", ops::arange(ctx_, 12, DType::F32, start)},
            {"optim.exp_avg", ops::arange(ctx_, 5, DType::BF16, start)}};
  }
  void save(int64_t step, int keep_last = 0) {
    save_checkpoint(dir_, step, {{"tokens_seen", step * 10}}, tensors(static_cast<double>(step)), keep_last);
  }
  std::vector<int64_t> steps(bool complete_only) {
    std::vector<int64_t> out;
    for (const CheckpointInfo& c : list_checkpoints(dir_)) {
      if (c.complete || !complete_only) out.push_back(c.step);
    }
    return out;
  }
  ContextPtr ctx_ = std::make_shared<CpuContext>();
};

TEST_F(CheckpointTest, Names) {
  EXPECT_EQ(checkpoint_dir_name(1000), "step_00001000");
  EXPECT_EQ(checkpoint_dir_name(123456789012), "step_123456789012");
  EXPECT_EQ(checkpoint_rank_file_name(3), "rank_00003.bin");
  EXPECT_EQ(checkpoints_root(dir_), dir_ / "checkpoints");
  expect_error_containing([] { checkpoint_dir_name(-1); }, "negative");
}

TEST_F(CheckpointTest, SaveWritesTheLayoutAndOpensBack) {
  const nlohmann::json meta = {{"config", {{"model", {{"hidden_size", 64}}}}},
                               {"tokens_seen", 4096},
                               {"rng", {{"seed", 1}, {"offset", 77}}}};
  const fs::path dir = save_checkpoint(dir_, 1000, meta, tensors(3.0));
  EXPECT_EQ(dir, dir_ / "checkpoints" / "step_00001000");
  for (const char* file : {"meta.json", "rank_00000.bin", "COMPLETE"})
    EXPECT_TRUE(fs::is_regular_file(dir / file)) << file;
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), {}), 3);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_ / "checkpoints"), {}), 1);  // no staging left

  const LoadedCheckpoint loaded = open_checkpoint(dir);
  EXPECT_EQ(loaded.dir, dir);
  EXPECT_EQ(loaded.step, 1000);
  EXPECT_EQ(loaded.world_size, 1);
  EXPECT_EQ(loaded.meta["format_version"], kCheckpointFormatVersion);
  EXPECT_EQ(loaded.meta["tokens_seen"], 4096);
  EXPECT_EQ(loaded.meta["rng"]["offset"], 77);
  EXPECT_EQ(loaded.meta["config"]["model"]["hidden_size"], 64);
  const Tensor emb = loaded.tensors.read("model.embed_tokens.weight");
  EXPECT_EQ(emb.data<float>()[11], 14.0f);
  EXPECT_EQ(loaded.tensors.entry("optim.exp_avg").dtype, DType::BF16);

  const auto latest = latest_complete(dir_);
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->step, 1000);
  EXPECT_EQ(latest->dir, dir);
}

TEST_F(CheckpointTest, EmptyRunHasNoCheckpoints) {
  EXPECT_TRUE(list_checkpoints(dir_).empty());
  EXPECT_FALSE(latest_complete(dir_).has_value());
  EXPECT_TRUE(list_checkpoints(dir_ / "does_not_exist").empty());
}

TEST_F(CheckpointTest, KeepLastK) {
  for (int64_t step : {100, 200, 300, 400, 500}) save(step, 2);
  EXPECT_EQ(steps(false), (std::vector<int64_t>{400, 500}));
  EXPECT_EQ(open_checkpoint(dir_ / "checkpoints" / "step_00000400").tensors.read("optim.exp_avg").numel(), 5);
  // keep_last 0 keeps everything.
  save(600);
  EXPECT_EQ(steps(false), (std::vector<int64_t>{400, 500, 600}));
}

TEST_F(CheckpointTest, PruningNeverDeletesTheCheckpointJustWrittenNorIncompleteOnes) {
  save(1000);
  save(2000);
  fs::create_directories(dir_ / "checkpoints" / "step_00000050");  // an interrupted save: not ours to delete
  save(1500, 1);  // 2000 is the newest, 1500 was just written
  EXPECT_EQ(steps(true), (std::vector<int64_t>{1500, 2000}));
  EXPECT_EQ(steps(false), (std::vector<int64_t>{50, 1500, 2000}));
}

TEST_F(CheckpointTest, LatestCompleteSkipsIncompleteDirectories) {
  save(100);
  save(200);
  const fs::path interrupted = dir_ / "checkpoints" / "step_00000300";
  fs::create_directories(interrupted);
  write_string_atomically(interrupted / "meta.json", "{}");
  fs::create_directories(dir_ / "checkpoints" / "step_00000400.tmp");  // staging: not listed
  fs::create_directories(dir_ / "checkpoints" / "stepping");           // not a checkpoint name

  const std::vector<CheckpointInfo> all = list_checkpoints(dir_);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[2].step, 300);
  EXPECT_FALSE(all[2].complete);
  EXPECT_TRUE(all[1].complete);
  EXPECT_EQ(latest_complete(dir_)->step, 200);
  expect_error_containing([&] { open_checkpoint(interrupted); },
                          "step_00000300\" is incomplete (no COMPLETE marker): the run that wrote it was "
                          "interrupted");
  expect_error_containing([&] { open_checkpoint(dir_ / "checkpoints" / "step_00000999"); }, "does not exist");
}

TEST_F(CheckpointTest, SavingAtAnExistingCompleteStepIsAnError) {
  save(100);
  try {
    save_checkpoint(dir_, 100, {}, tensors(42.0), 0);
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("step_00000100\" already exists and is complete"), std::string::npos)
        << e.what();
  }
  // The original is intact and no staging directory is left.
  EXPECT_EQ(open_checkpoint(dir_ / "checkpoints" / "step_00000100")
                .tensors.read("model.embed_tokens.weight")
                .data<float>()[0],
            100.0f);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_ / "checkpoints"), {}), 1);
}

TEST_F(CheckpointTest, AnIncompleteDirectoryAtTheSameStepIsReplaced) {
  const fs::path stale = dir_ / "checkpoints" / "step_00000100";
  fs::create_directories(stale);
  write_string_atomically(stale / "junk", "x");
  fs::create_directories(dir_ / "checkpoints" / "step_00000100.tmp");
  write_string_atomically(dir_ / "checkpoints" / "step_00000100.tmp" / "rank_00000.bin", "half");
  save(100);
  EXPECT_FALSE(fs::exists(stale / "junk"));
  EXPECT_EQ(open_checkpoint(stale).step, 100);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_ / "checkpoints"), {}), 1);
}

TEST_F(CheckpointTest, BadMetaAndFailedWritesLeaveNothing) {
  expect_error_containing(
      [&] {
        save_checkpoint(dir_, 6, {{"step", 5}}, tensors(0.0));
      },
      "meta has \"step\": 5 but the checkpoint's is 6");
  expect_error_containing([&] { save_checkpoint(dir_, 6, nlohmann::json::array(), tensors(0.0)); },
                          "meta must be a JSON object");
  auto bad = tensors(0.0);
  bad.emplace_back("undefined", Tensor());
  expect_error_containing([&] { save_checkpoint(dir_, 6, {}, bad); }, "'undefined' is undefined");
  EXPECT_TRUE(list_checkpoints(dir_).empty());
  EXPECT_FALSE(fs::exists(dir_ / "checkpoints" / "step_00000006.tmp"));
}

TEST_F(CheckpointTest, MultiRankProtocol) {
  const fs::path staging = begin_checkpoint(dir_, 700);
  EXPECT_EQ(staging, dir_ / "checkpoints" / "step_00000700.tmp");
  write_checkpoint_rank(staging, 0, tensors(0.0));
  expect_error_containing([&] { finish_checkpoint(dir_, 700, {}, 2); }, "rank_00001.bin");
  EXPECT_FALSE(latest_complete(dir_).has_value());
  write_checkpoint_rank(staging, 1, tensors(1000.0));
  const fs::path dir = finish_checkpoint(dir_, 700, {{"world_size", 2}}, 2);
  const LoadedCheckpoint rank1 = open_checkpoint(dir, 1);
  EXPECT_EQ(rank1.world_size, 2);
  EXPECT_EQ(rank1.tensors.read("model.embed_tokens.weight").data<float>()[0], 1000.0f);
  EXPECT_EQ(TensorFileReader::open(dir / checkpoint_rank_file_name(0))
                .read_slice("model.embed_tokens.weight", 2, 1)
                .data<float>()[0],
            2.0f);
  expect_error_containing([&] { open_checkpoint(dir, 2); }, "rank 2 of checkpoint");
}

TEST_F(CheckpointTest, DamagedMetaIsAnIoError) {
  save(10);
  const fs::path dir = dir_ / "checkpoints" / "step_00000010";
  write_string_atomically(dir / "meta.json", "{\"format_version\": 1, ");
  expect_error_containing([&] { open_checkpoint(dir); }, "meta.json\" is damaged");
  write_string_atomically(dir / "meta.json", "{\"format_version\": 9, \"step\": 10, \"world_size\": 1}");
  expect_error_containing([&] { open_checkpoint(dir); }, "format version 9, this build reads version 1");
}

}  // namespace
}  // namespace coat::io
