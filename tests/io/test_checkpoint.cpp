// Checkpoint directories: layout, keep-last pruning, incomplete directories, refusal to overwrite, the
// multi-rank protocol, the COMPLETE manifest, and what a crash leaves (leftovers, corrupt checkpoints).
#include <gtest/gtest.h>

#include "expect_error.h"
#include "io_test_util.h"

#include "coat/core/error.h"
#include "coat/io/atomic_file.h"
#include "coat/io/checkpoint.h"
#include "coat/io/checkpoint_manifest.h"
#include "coat/io/checkpoint_reader.h"
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

  const CheckpointReader loaded = CheckpointReader::open(dir);
  EXPECT_EQ(loaded.dir(), dir);
  EXPECT_EQ(loaded.step(), 1000);
  EXPECT_EQ(loaded.world_size(), 1);
  EXPECT_EQ(loaded.format_version(), 1);  // save_checkpoint writes named tensors in one file
  EXPECT_EQ(loaded.meta()["format_version"], 1);
  EXPECT_EQ(loaded.meta()["tokens_seen"], 4096);
  EXPECT_EQ(loaded.meta()["rng"]["offset"], 77);
  EXPECT_EQ(loaded.meta()["config"]["model"]["hidden_size"], 64);
  const Tensor emb = loaded.read("model.embed_tokens.weight");
  EXPECT_EQ(emb.data<float>()[11], 14.0f);
  EXPECT_EQ(loaded.info("optim.exp_avg").dtype, DType::BF16);
  EXPECT_NO_THROW(loaded.verify_all());
  // COMPLETE is the manifest: meta.json's and the rank file's sizes and checksums.
  const CheckpointManifest manifest = read_manifest(dir);
  EXPECT_EQ(manifest.step, 1000);
  ASSERT_TRUE(manifest.meta.has_value());
  EXPECT_EQ(manifest.meta->bytes, fs::file_size(dir / "meta.json"));
  ASSERT_EQ(manifest.files.size(), 1u);
  EXPECT_EQ(manifest.files[0].file, "rank_00000.bin");
  EXPECT_EQ(manifest.files[0].crc32c, file_crc32c(dir / "rank_00000.bin"));

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
  EXPECT_EQ(CheckpointReader::open(dir_ / "checkpoints" / "step_00000400").read("optim.exp_avg").numel(), 5);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_ / "checkpoints"), {}), 2);  // no trash left behind
  // keep_last 0 keeps everything.
  save(600);
  EXPECT_EQ(steps(false), (std::vector<int64_t>{400, 500, 600}));
}

// finish_checkpoint with `retired`: the checkpoints beyond keep_last are renamed step_N.trash (out of the
// checkpoints a resume sees) and left for the caller, who deletes them with remove_retired_checkpoint; one
// left behind by a crash is removed at the next start.
TEST_F(CheckpointTest, RetiredCheckpointsAreRenamedForTheCallerToDelete) {
  CheckpointLayout layout;
  layout.units = {{"embed", 4, {{"model.embed_tokens.weight", {4}, 0}}}};
  layout.kinds = {{"master", DType::F32, 1}};
  layout.files = {{{0, 4}}};
  std::vector<fs::path> retired;
  for (const int64_t step : {10, 20, 30}) {
    const fs::path staging = begin_checkpoint(dir_, step);
    const RankFileRecord r = write_checkpoint_rank(staging, 0, {{"embed.master", ops::arange(ctx_, 4, DType::F32)}});
    finish_checkpoint(dir_, step, {{"world_size", 1}}, layout, {r}, 1, &retired);
  }
  const fs::path root = dir_ / "checkpoints";
  EXPECT_EQ(retired, (std::vector<fs::path>{root / "step_00000010.trash", root / "step_00000020.trash"}));
  EXPECT_EQ(steps(false), (std::vector<int64_t>{30}));
  for (const fs::path& trash : retired) EXPECT_TRUE(fs::is_regular_file(trash / "rank_00000.bin")) << trash;
  remove_retired_checkpoint(retired[0]);
  EXPECT_FALSE(fs::exists(retired[0]));
  expect_error_containing([&] { remove_retired_checkpoint(root / "step_00000030"); },
                          "is not a retired checkpoint");
  EXPECT_TRUE(fs::exists(root / "step_00000030" / "COMPLETE"));
  EXPECT_EQ(remove_checkpoint_leftovers(dir_), (std::vector<fs::path>{retired[1]}));  // a crash left it
  EXPECT_EQ(std::distance(fs::directory_iterator(root), {}), 1);
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
  expect_error_containing([&] { CheckpointReader::open(interrupted); },
                          "step_00000300\" is incomplete (no COMPLETE marker): the run that wrote it was "
                          "interrupted");
  expect_error_containing([&] { CheckpointReader::open(dir_ / "checkpoints" / "step_00000999"); },
                          "does not exist");
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
  EXPECT_EQ(CheckpointReader::open(dir_ / "checkpoints" / "step_00000100")
                .read("model.embed_tokens.weight")
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
  EXPECT_EQ(CheckpointReader::open(stale).step(), 100);
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

// Format 2: two rank files, each with its slice of one unit (masters and a per-group state), committed by
// finish_checkpoint against the ranks' reports.
TEST_F(CheckpointTest, MultiRankProtocol) {
  CheckpointLayout layout;
  layout.units = {{"embed", 12, {{"model.embed_tokens.weight", {3, 4}, 0}}}};
  layout.kinds = {{"master", DType::F32, 1}, {"exp_avg.scale", DType::F32, 4}};
  layout.files = {{{0, 8}}, {{8, 4}}};
  const fs::path staging = begin_checkpoint(dir_, 700);
  EXPECT_EQ(staging, dir_ / "checkpoints" / "step_00000700.tmp");
  const RankFileRecord r0 =
      write_checkpoint_rank(staging, 0,
                            {{"embed.master", ops::arange(ctx_, 8, DType::F32)},
                             {"embed.exp_avg.scale", ops::arange(ctx_, 2, DType::F32, 100)}});
  expect_error_containing(
      [&] {
        finish_checkpoint(dir_, 700, {{"world_size", 2}}, layout, {r0, {}});
      },
      "rank_00001.bin");
  EXPECT_FALSE(latest_complete(dir_).has_value());
  const RankFileRecord r1 =
      write_checkpoint_rank(staging, 1,
                            {{"embed.master", ops::arange(ctx_, 4, DType::F32, 8)},
                             {"embed.exp_avg.scale", ops::arange(ctx_, 1, DType::F32, 102)}});
  expect_error_containing(
      [&] {
        finish_checkpoint(dir_, 700, {{"world_size", 2}}, layout, {r0, {r1.bytes + 1, r1.crc32c}});
      },
      "COMPLETE records");
  const fs::path dir = finish_checkpoint(dir_, 700, {{"world_size", 2}}, layout, {r0, r1});
  const CheckpointReader ck = CheckpointReader::open(dir);
  EXPECT_EQ(ck.format_version(), 2);
  EXPECT_EQ(ck.world_size(), 2);
  EXPECT_EQ(ck.file_count(), 2);
  EXPECT_NO_THROW(ck.verify_all());
  // The one-process layout: the parameter by name, the state whole.
  const Tensor emb = ck.read("model.embed_tokens.weight");
  EXPECT_EQ(emb.shape(), (Shape{3, 4}));
  for (int i = 0; i < 12; ++i) EXPECT_EQ(emb.data<float>()[i], static_cast<float>(i));
  const Tensor scale = ck.read("embed.exp_avg.scale");
  ASSERT_EQ(scale.numel(), 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(scale.data<float>()[i], 100.0f + static_cast<float>(i));
  Tensor middle = Tensor::empty(ctx_, {5}, DType::F32);
  ck.read_range_into("model.embed_tokens.weight", 6, middle);  // spans both files
  for (int i = 0; i < 5; ++i) EXPECT_EQ(middle.data<float>()[i], 6.0f + static_cast<float>(i));
  expect_error_containing([&] { ck.read("embed.master"); }, "has no tensor 'embed.master'");
}

TEST_F(CheckpointTest, DamagedMetaIsAnIoError) {
  save(10);
  const fs::path dir = dir_ / "checkpoints" / "step_00000010";
  write_string_atomically(dir / "meta.json", "{\"format_version\": 1, ");
  expect_error_containing([&] { CheckpointReader::open(dir); }, "meta.json was edited or is damaged");
  // A marker of an earlier build (no manifest): meta.json is read unverified and its own checks apply.
  write_string_atomically(dir / "COMPLETE", "{\"step\": 10, \"world_size\": 1}\n");
  expect_error_containing([&] { CheckpointReader::open(dir); }, "meta.json\" is damaged");
  write_string_atomically(dir / "meta.json", "{\"format_version\": 9, \"step\": 10, \"world_size\": 1}");
  expect_error_containing([&] { CheckpointReader::open(dir); },
                          "format version 9, this build reads versions 1 and 2");
  write_string_atomically(dir / "COMPLETE", "{\"step\": 10, ");
  expect_error_containing([&] { CheckpointReader::open(dir); }, "COMPLETE is damaged");
}

// An edit of meta.json that keeps it valid JSON (the step, the sampler position) is found by its checksum.
TEST_F(CheckpointTest, AnEditedMetaIsFound) {
  save(10);
  const fs::path dir = dir_ / "checkpoints" / "step_00000010";
  std::string text = test::read_file_text(dir / "meta.json");
  const size_t at = text.find("\"tokens_seen\": 100");
  ASSERT_NE(at, std::string::npos) << text;
  text[at + 15] = '2';  // 100 -> 200
  write_string_atomically(dir / "meta.json", text);
  expect_error_containing([&] { CheckpointReader::open(dir); }, "meta.json was edited or is damaged");
}

// Every byte of a rank file is covered: a flip in a tensor names the tensor; in the header, the index or the
// padding between tensors, the file.
TEST_F(CheckpointTest, AnyFlippedByteOfARankFileIsFound) {
  save(10);
  const fs::path dir = dir_ / "checkpoints" / "step_00000010";
  const fs::path file = dir / "rank_00000.bin";
  const std::vector<uint8_t> original = test::read_file_bytes(file);
  const TensorFileReader reader = TensorFileReader::open(file);
  const uint64_t tensor_byte = reader.entry("optim.exp_avg").offset + 3;
  const uint64_t padding_byte = reader.entry("model.embed_tokens.weight").offset + 48 + 1;  // after 12 floats
  for (uint64_t at : {uint64_t{5}, uint64_t{50}, kTensorFileHeaderBytes + 3, padding_byte, tensor_byte}) {
    std::vector<uint8_t> bytes = original;
    bytes[at] ^= 0x10;
    test::write_file_bytes(file, bytes);
    try {
      CheckpointReader::open(dir).verify_all();  // format 1 opens its file at once: a bad header fails here
      ADD_FAILURE() << "a flip at byte " << at << " went unnoticed";
    } catch (const IoError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("rank_00000.bin"), std::string::npos) << what;
      if (at == tensor_byte) {
        EXPECT_NE(what.find("optim.exp_avg"), std::string::npos) << what;
      }
    }
  }
  test::write_file_bytes(file, original);
  EXPECT_NO_THROW(CheckpointReader::open(dir).verify_all());
}

TEST_F(CheckpointTest, LeftoversOfACrashAreRemovedAndCorruptOnesKept) {
  save(100);
  save(200);
  const fs::path root = dir_ / "checkpoints";
  for (const char* name :
       {"step_00000300.tmp", "step_00000050.trash", "step_00000400", "step_00000150.corrupt"}) {
    fs::create_directories(root / name);
    write_string_atomically(root / name / "meta.json", "{}");
  }
  // A spare rank file a crashed run had reserved for its first saves.
  EXPECT_EQ(reserve_spare_rank_file(dir_, 1, 3, 2, 1000), root / "spare_1_3.trash" / "rank_00002.bin");
  EXPECT_EQ(fs::file_size(root / "spare_1_3.trash" / "rank_00002.bin"), 1000u);
  const std::vector<fs::path> removed = remove_checkpoint_leftovers(dir_);
  EXPECT_EQ(removed, (std::vector<fs::path>{root / "spare_1_3.trash", root / "step_00000050.trash",
                                            root / "step_00000300.tmp", root / "step_00000400"}));
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(root)) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"step_00000100", "step_00000150.corrupt", "step_00000200"}));
  EXPECT_TRUE(remove_checkpoint_leftovers(dir_).empty());

  // A damaged checkpoint renamed out of the namespace: never listed, loaded or pruned again.
  EXPECT_EQ(mark_checkpoint_corrupt(root / "step_00000200"), root / "step_00000200.corrupt");
  EXPECT_EQ(latest_complete(dir_)->step, 100);
  save(200);
  EXPECT_EQ(mark_checkpoint_corrupt(root / "step_00000200"), root / "step_00000200.corrupt.2");
  save(300, 1);
  EXPECT_EQ(steps(false), (std::vector<int64_t>{300}));
  EXPECT_TRUE(fs::exists(root / "step_00000200.corrupt"));
  EXPECT_TRUE(fs::exists(root / "step_00000200.corrupt.2"));
}

TEST_F(CheckpointTest, AFailedSaveLeavesNothing) {
  save(100);
  // The rank file cannot be written (its name is taken by a directory): no staging, no step directory.
  fs::create_directories(dir_ / "checkpoints" / "step_00000200.tmp");
  CheckpointLayout layout;
  layout.units = {{"u", 4, {{"w", {4}, 0}}}};
  layout.kinds = {{"master", DType::F32, 1}};
  layout.files = {{{0, 4}}};
  const fs::path staging = begin_checkpoint(dir_, 200);
  fs::create_directories(staging / "rank_00000.bin");
  EXPECT_THROW(write_checkpoint_rank(staging, 0, {{"u.master", ops::arange(ctx_, 4, DType::F32)}}), IoError);
  EXPECT_TRUE(abandon_checkpoint(dir_, 200));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_ / "checkpoints"), {}), 1);
  EXPECT_EQ(steps(false), (std::vector<int64_t>{100}));
}

}  // namespace
}  // namespace coat::io
