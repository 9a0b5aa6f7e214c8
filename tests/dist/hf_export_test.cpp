// HF export of checkpoints written by several ranks (issue 16): the job's N ranks train 3 steps and save a
// format-2 checkpoint of N rank files; one process loads it (re-sliced to one rank), keeps its masters and
// saves it again. Both checkpoints are exported, F32 and BF16, in one file and sharded: every exported file
// is the same byte for byte, every tensor equals the one process's master (cast as torch casts), and the
// shards and their index are consistent. Llama (untied) and OLMo (tied embeddings, no norm weights).
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>

#include "coat/io/checkpoint_reader.h"
#include "coat/io/hf_export.h"
#include "coat/ops/copy.h"
#include "coat/train/trainer.h"
#include "dist_test_world.h"
#include "io/hf_export_check.h"
#include "training_job.h"

namespace coat::train {
namespace {

namespace fs = std::filesystem;

/// The names and bytes of every file in an export directory.
std::map<std::string, std::vector<uint8_t>> files_of(const fs::path& dir) {
  std::map<std::string, std::vector<uint8_t>> out;
  for (const auto& e : fs::directory_iterator(dir))
    out[e.path().filename().string()] = io::test::read_file_bytes(e.path());
  return out;
}

class HfExportAcrossRanks : public TrainingJob, public ::testing::WithParamInterface<const char*> {};

TEST_P(HfExportAcrossRanks, EqualsTheOneProcessExport) {
  const int world = test::world().world_size();
  if (world < 2) GTEST_SKIP() << "one process: tests/io/test_hf_export.cpp";
  const std::string architecture = GetParam();
  const auto set = [&](nlohmann::json& c) {
    c["model"]["architecture"] = architecture;
    c["model"]["tie_word_embeddings"] = architecture == "olmo";
    c["train"]["max_steps"] = 3;
  };
  on_first_ranks(world, [&](dist::Communicator& comm) {
    Trainer t(config(dir_ / "ranks", set, world), ctx_, false, &comm);
    t.run();
  });
  const fs::path sharded_ck = checkpoint(dir_ / "ranks", 3);
  std::map<std::string, Tensor> masters;
  on_first_ranks(1, [&](dist::Communicator& comm) {
    Trainer one(config(dir_ / "one", set, 1), ctx_, false, &comm);
    one.load_checkpoint(sharded_ck);
    for (const nn::Parameter& p : one.model().parameters()) masters[p.name] = ops::clone(p.master);
    one.save_checkpoint();
  });
  if (test::world().rank() != 0) return;
  ASSERT_EQ(io::CheckpointReader::open(sharded_ck).file_count(), world);
  const fs::path one_ck = checkpoint(dir_ / "one", 3);
  ASSERT_EQ(io::CheckpointReader::open(one_ck).file_count(), 1);

  for (DType dtype : {DType::F32, DType::BF16}) {
    // The embedding (64 x 32 x 4 bytes) is larger than 6000 bytes: a file of its own; the rest share files.
    for (uint64_t limit : {io::kDefaultMaxShardBytes, uint64_t{6000}}) {
      const std::string tag = std::string(dtype_name(dtype)) + "_" + std::to_string(limit);
      const fs::path from_ranks = dir_ / ("hf_ranks_" + tag), from_one = dir_ / ("hf_one_" + tag);
      const io::HfExportResult r = io::export_hf_model(sharded_ck, from_ranks, {dtype, limit, false});
      io::export_hf_model(one_ck, from_one, {dtype, limit, false});
      EXPECT_EQ(r.checkpoint_ranks, world);
      EXPECT_EQ(r.file_count > 1, limit < io::kDefaultMaxShardBytes) << tag;
      EXPECT_TRUE(files_of(from_ranks) == files_of(from_one)) << tag << ": the exports differ";
      const std::map<std::string, Tensor> exported = io::test::read_hf_export(from_ranks, limit);
      EXPECT_EQ(exported.size(), masters.size()) << tag;
      for (const auto& [name, master] : masters) {
        ASSERT_TRUE(exported.contains(name)) << tag << ": no " << name;
        const Tensor expected = ops::cast(master, dtype);
        EXPECT_EQ(io::test::raw_bytes(exported.at(name)), io::test::raw_bytes(expected))
            << tag << ": " << name;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, HfExportAcrossRanks, ::testing::Values("llama", "olmo"));

}  // namespace
}  // namespace coat::train
