// Choosing the checkpoint to resume (one process; tests/dist/resume_matrix_test.cpp does it over ranks):
// --resume auto skips a damaged checkpoint (a flipped byte of a rank file, an edited meta.json) and renames
// it step_N.corrupt, --resume DIR older than the newest is refused, leftovers of a crash are removed, and a
// checkpoint of another model or state storage is refused, naming the key and both values, before anything is
// written; a resume checksums each byte of the checkpoint once.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include "coat/data/token_file.h"
#include "coat/io/checkpoint.h"
#include "coat/io/checkpoint_manifest.h"
#include "coat/io/checksum.h"
#include "coat/io/tensor_file.h"
#include "coat/ops/runtime.h"
#include "coat/train/resume.h"
#include "coat/train/trainer.h"
#include "small_run_test.h"

namespace coat::train {
namespace {

namespace fs = std::filesystem;

class ResumeTest : public SmallRunTest {
 protected:

  /// configs/test_small.json (6 steps, checkpoints every 3) in run directory `run`.
  TrainConfig config(const std::string& run, const std::function<void(nlohmann::json&)>& set = {}) const {
    nlohmann::json c = small_config(run);
    c["checkpoint"]["keep_last"] = 0;
    if (set) set(c);
    return parse_train_config(c, "c.json");
  }
  /// Trains run `run` to the end: checkpoints at steps 3 and 6.
  std::vector<double> train(const std::string& run) {
    Trainer t(config(run), ctx_);
    t.run();
    std::vector<double> out;
    for (const StepRecord& r : t.history()) out.push_back(r.loss);
    return out;
  }
  fs::path checkpoint(const std::string& run, int64_t step) const {
    return io::checkpoints_root(dir_ / run) / io::checkpoint_dir_name(step);
  }
  std::optional<fs::path> choose(const std::string& run, const std::string& resume) {
    return choose_resume_checkpoint(resume, config(run), nullptr, ctx_);
  }
  static void flip_byte(const fs::path& file, uint64_t at) {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(at));
    char c = 0;
    f.get(c);
    f.seekp(static_cast<std::streamoff>(at));
    f.put(static_cast<char>(c ^ 0x01));
  }

  ContextPtr ctx_ = ops::make_context(Device::cpu());
};

TEST_F(ResumeTest, AutoTakesTheNewestAndNothingWithoutCheckpoints) {
  EXPECT_FALSE(choose("empty", "").has_value());
  EXPECT_FALSE(choose("empty", "auto").has_value());
  train("run");
  EXPECT_EQ(choose("run", "auto"), checkpoint("run", 6));
}

// A flipped byte in a tensor of the newest checkpoint: it is renamed step_N.corrupt (kept) and the run
// resumes from the one before, continuing bit-identically; the corrupt one is never counted or loaded again.
TEST_F(ResumeTest, AutoSkipsADamagedCheckpointAndRenamesIt) {
  const std::vector<double> full = train("run");
  const fs::path file = checkpoint("run", 6) / io::checkpoint_rank_file_name(0);
  flip_byte(file, io::TensorFileReader::open(file).entry("layers.1.master").offset + 17);
  const std::optional<fs::path> chosen = choose("run", "auto");
  EXPECT_EQ(chosen, checkpoint("run", 3));
  EXPECT_FALSE(fs::exists(checkpoint("run", 6)));
  EXPECT_TRUE(fs::exists(io::checkpoints_root(dir_ / "run") / "step_00000006.corrupt" / "rank_00000.bin"));
  Trainer t(config("run"), ctx_, /*resuming=*/true);
  t.load_checkpoint(*chosen);
  t.run();
  std::vector<double> resumed;
  for (const StepRecord& r : t.history()) resumed.push_back(r.loss);
  EXPECT_EQ(resumed, std::vector<double>(full.begin() + 3, full.end()));
  EXPECT_EQ(choose("run", "auto"), checkpoint("run", 6));  // written again by the resumed run
}

// An edit of meta.json that stays valid JSON (the sampler position) is found by the checksum in COMPLETE.
/// The bytes of a checkpoint's rank files, as COMPLETE records them.
uint64_t rank_file_bytes(const fs::path& dir) {
  uint64_t bytes = 0;
  for (const io::ManifestFile& f : io::read_manifest(dir).files) bytes += f.bytes;
  return bytes;
}

// coat-train's resume (open_resume_checkpoint, then the load) checksums each byte of the checkpoint once: the
// verification every byte, the load nothing more. A damaged newest checkpoint is still found and skipped,
// and the run continues bit-identically. A load by directory (no verification before it) checksums every
// tensor it reads, as before.
TEST_F(ResumeTest, AResumeChecksumsEachByteOnce) {
  const std::vector<double> full = train("run");
  const fs::path file = checkpoint("run", 6) / io::checkpoint_rank_file_name(0);
  flip_byte(file, io::TensorFileReader::open(file).entry("layers.0.exp_avg_sq").offset + 9);
  const std::optional<io::CheckpointReader> ck = open_resume_checkpoint("auto", config("run"), nullptr, ctx_);
  ASSERT_TRUE(ck.has_value());
  EXPECT_EQ(ck->dir(), checkpoint("run", 3));
  EXPECT_TRUE(fs::exists(io::checkpoints_root(dir_ / "run") / "step_00000006.corrupt"));
  const uint64_t bytes = rank_file_bytes(checkpoint("run", 3));
  EXPECT_EQ(ck->checksummed_bytes(), bytes);
  Trainer t(config("run"), ctx_, /*resuming=*/true);
  t.load_checkpoint(*ck);
  EXPECT_EQ(ck->checksummed_bytes(), bytes) << "the load checksummed bytes again";
  t.run();
  EXPECT_EQ(losses(t), std::vector<double>(full.begin() + 3, full.end()));

  const io::CheckpointReader unverified = io::CheckpointReader::open(checkpoint("run", 3));
  Trainer u(config("run"), ctx_, /*resuming=*/true);
  u.load_checkpoint(unverified);
  uint64_t tensor_bytes = 0;
  for (const io::TensorFileEntry& e : unverified.file(0).entries()) tensor_bytes += e.bytes;
  EXPECT_EQ(unverified.checksummed_bytes(), tensor_bytes);
}

TEST_F(ResumeTest, AnEditedMetaIsDamage) {
  train("run");
  const fs::path meta = checkpoint("run", 6) / "meta.json";
  std::ifstream in(meta);
  nlohmann::json j = nlohmann::json::parse(in);
  in.close();
  j["sampler"]["position"] = j["sampler"]["position"].get<int64_t>() + 1;
  std::ofstream(meta) << j.dump(2) << "\n";
  EXPECT_EQ(choose("run", "auto"), checkpoint("run", 3));
  EXPECT_TRUE(fs::exists(io::checkpoints_root(dir_ / "run") / "step_00000006.corrupt"));
  // Every checkpoint damaged: nothing to resume, both kept.
  flip_byte(checkpoint("run", 3) / "meta.json", 10);
  EXPECT_FALSE(choose("run", "auto").has_value());
  EXPECT_TRUE(fs::exists(io::checkpoints_root(dir_ / "run") / "step_00000003.corrupt"));
}

TEST_F(ResumeTest, ADirectoryOlderThanTheNewestIsRefused) {
  train("run");
  try {
    choose("run", checkpoint("run", 3).string());
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("is step 3 but the run directory holds a newer complete checkpoint"),
              std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("step_00000006"), std::string::npos) << e.what();
  }
  EXPECT_EQ(choose("run", checkpoint("run", 6).string()), checkpoint("run", 6));
  EXPECT_THROW(choose("run", (dir_ / "nowhere").string()), IoError);
}

// A damaged checkpoint named by --resume DIR is refused with the file and tensor, and left where it is.
TEST_F(ResumeTest, ADamagedDirectoryIsRefusedAndKept) {
  train("run");
  const fs::path file = checkpoint("run", 6) / io::checkpoint_rank_file_name(0);
  flip_byte(file, io::TensorFileReader::open(file).entry("embed.exp_avg").offset + 5);
  try {
    choose("run", checkpoint("run", 6).string());
    FAIL() << "no error";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("is damaged"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("rank_00000.bin"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'embed.exp_avg'"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::exists(checkpoint("run", 6)));
}

// What a crash left (a staging directory of a save cut short, a trash directory of a pruning cut short, a
// step directory without COMPLETE from an earlier build) is removed when a run resumes.
TEST_F(ResumeTest, LeftoversOfACrashAreRemovedAtStart) {
  train("run");
  const fs::path root = io::checkpoints_root(dir_ / "run");
  for (const char* name : {"step_00000009.tmp", "step_00000002.trash", "step_00000007"}) {
    fs::create_directories(root / name);
    std::ofstream(root / name / "meta.json") << "{}";
  }
  EXPECT_EQ(choose("run", "auto"), checkpoint("run", 6));
  for (const char* name : {"step_00000009.tmp", "step_00000002.trash", "step_00000007"}) {
    EXPECT_FALSE(fs::exists(root / name)) << name;
  }
}

// Refused before the run directory is touched, naming what differs.
TEST_F(ResumeTest, AnotherModelOrStateStorageIsRefusedBeforeAnythingIsWritten) {
  train("run");
  const auto refused = [&](const std::function<void(nlohmann::json&)>& set, const std::string& needle) {
    try {
      choose_resume_checkpoint(checkpoint("run", 6).string(), config("fresh", set), nullptr, ctx_);
      ADD_FAILURE() << "accepted; expected " << needle;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(dir_ / "fresh"));
  };
  refused([](nlohmann::json& c) { c["model"]["hidden_size"] = 48; },
          "another model (model.hidden_size: checkpoint 32, this config 48)");
  refused([](nlohmann::json& c) { c["optim"]["state_dtype"] = "fp8"; },
          "stores the AdamW moment exp_avg as f32 but this config stores it as fp8(e4m3, group 128)");
}

// A checkpoint whose unit layout differs from the one this build makes of the same model config (as another
// build's could) is refused, naming the parameter and both offsets.
TEST_F(ResumeTest, AnotherUnitLayoutIsRefused) {
  train("run");
  const fs::path dir = checkpoint("run", 6);
  std::ifstream in(dir / "meta.json");
  nlohmann::json meta = nlohmann::json::parse(in);
  in.close();
  nlohmann::json& param = meta["layout"]["units"][1]["params"][3];  // layers.0 o_proj
  ASSERT_EQ(param["name"], "model.layers.0.self_attn.o_proj.weight");
  const int64_t offset = param["offset"].get<int64_t>();
  param["offset"] = offset + 64;
  // Written as a build with that layout would have: checksummed in COMPLETE.
  const std::string text = meta.dump(2) + "\n";
  std::ofstream(dir / "meta.json") << text;
  io::CheckpointManifest manifest = io::read_manifest(dir);
  manifest.meta->bytes = text.size();
  manifest.meta->crc32c = io::crc32c(text.data(), text.size());
  std::ofstream(dir / "COMPLETE") << io::manifest_json(manifest);
  try {
    choose("run", "auto");
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(
                  detail::concat("lays the model out otherwise: 'model.layers.0.self_attn.o_proj."
                                 "weight' offset: checkpoint ",
                                 offset + 64, ", this run ", offset)),
              std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(fs::exists(dir));  // not damaged: kept where it is
}

}  // namespace
}  // namespace coat::train
