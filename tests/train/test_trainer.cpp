// The trainer end to end on a tiny model: determinism, exact resume, and the errors a user meets.
#include <gtest/gtest.h>

#include <functional>

#include <filesystem>
#include <fstream>
#include <cstring>
#include <limits>
#include <random>

#include "coat/data/token_file.h"
#include "coat/io/checkpoint.h"
#include "coat/io/checkpoint_reader.h"
#include "coat/ops/copy.h"
#include "coat/ops/runtime.h"
#include "coat/train/resume.h"
#include "coat/train/trainer.h"
#include "small_run_test.h"

namespace coat::train {
namespace {

namespace fs = std::filesystem;

class TrainerTest : public SmallRunTest {
 protected:

  nlohmann::json config(const std::string& run) const {
    nlohmann::json c = small_config(run);
    return c;
  }
  ContextPtr ctx_ = ops::make_context(Device::cpu());
};

TEST_F(TrainerTest, SameSeedSameLossesAndLearning) {
  Trainer a(parse_train_config(config("a"), "a.json"), ctx_);
  a.run();
  Trainer b(parse_train_config(config("b"), "b.json"), ctx_);
  b.run();
  ASSERT_EQ(a.history().size(), 6u);
  EXPECT_EQ(losses(a), losses(b));  // bit-identical
  EXPECT_LT(a.history().back().loss, a.history().front().loss);
  EXPECT_TRUE(fs::exists(dir_ / "a" / "config.json"));
  EXPECT_TRUE(fs::exists(dir_ / "a" / "metrics.jsonl"));
}

class TrainerResume : public TrainerTest, public ::testing::WithParamInterface<std::string> {
 protected:
  /// Six steps in one run against three, a native checkpoint on disk, and three more after resuming: the
  /// losses and parameters are bit-identical. `set` adjusts the config of both runs.
  void expect_resume_bit_identical(const std::function<void(nlohmann::json&)>& set) {
    auto cfg = [&](const std::string& run) {
      nlohmann::json c = config(run);
      set(c);
      return c;
    };
    Trainer full(parse_train_config(cfg("full"), "c.json"), ctx_);
    full.run();
    {
      Trainer first(parse_train_config(cfg("split"), "c.json"), ctx_);
      first.run(/*stop_after_step=*/3);  // checkpoint.interval = 3 writes step 3
      ASSERT_EQ(first.step(), 3);
    }
    Trainer second(parse_train_config(cfg("split"), "c.json"), ctx_, /*resuming=*/true);
    auto latest = second.latest_checkpoint();
    ASSERT_TRUE(latest.has_value());
    second.load_checkpoint(*latest);
    EXPECT_EQ(second.step(), 3);
    second.run();
    const std::vector<double> all = losses(full);
    EXPECT_EQ(losses(second), std::vector<double>(all.begin() + 3, all.end()));
    // Parameters are bit-identical too.
    for (size_t i = 0; i < full.model().parameters().size(); ++i) {
      const Tensor& p = full.model().parameters()[i].master;
      const Tensor& q = second.model().parameters()[i].master;
      ASSERT_EQ(std::memcmp(p.data_ptr(), q.data_ptr(), p.nbytes()), 0) << full.model().parameters()[i].name;
    }
  }
};

// Through a native checkpoint on disk, for every optimizer-state storage (FP8 codes with their scales,
// exponents and centres included): the resumed run continues bit-identically.
TEST_P(TrainerResume, ResumeIsBitIdentical) {
  expect_resume_bit_identical([](nlohmann::json& c) { c["optim"]["state_dtype"] = GetParam(); });
}

// The same under the FP8 recipes (FP8 weight copies made again after the load, two micro-batches per step
// sharing them, coat's compressed saves and its default fp8_expand states).
class TrainerResumeRecipe : public TrainerResume {};
TEST_P(TrainerResumeRecipe, ResumeIsBitIdentical) {
  expect_resume_bit_identical([](nlohmann::json& c) { c["precision"]["recipe"] = GetParam(); });
}
INSTANTIATE_TEST_SUITE_P(Fp8Recipes, TrainerResumeRecipe, ::testing::Values("bf16", "fp8", "coat"));

// A checkpoint in the layout of earlier versions (format 1: FP32 moments per parameter, "<parameter>.exp_avg",
// flat; a COMPLETE marker without manifest) resumes exactly like the current per-rank layout.
TEST_F(TrainerTest, ResumesFromPerParameterStatesOfEarlierVersions) {
  {
    Trainer first(parse_train_config(config("new"), "c.json"), ctx_);
    first.run(/*stop_after_step=*/3);
  }
  // Rewrite the step-3 checkpoint with per-parameter states into another run directory.
  const io::CheckpointReader ck = io::CheckpointReader::open(dir_ / "new" / "checkpoints" / io::checkpoint_dir_name(3));
  Trainer layout(parse_train_config(config("layout"), "c.json"), ctx_);
  std::vector<std::pair<std::string, Tensor>> old;
  for (const nn::Parameter& p : layout.model().parameters()) old.emplace_back(p.name, ck.read(p.name));
  for (const models::ParamUnit& u : layout.model().units()) {
    for (const char* moment : {".exp_avg", ".exp_avg_sq"}) {
      const Tensor flat = ck.read(u.name + moment);
      for (size_t index : u.params) {
        const nn::Parameter& p = layout.model().parameters()[index];
        const int64_t begin = p.master.offset() - u.master.offset();
        old.emplace_back(p.name + moment, ops::clone(flat.slice(0, begin, begin + p.master.numel())));
      }
    }
  }
  fs::create_directories(dir_ / "old");
  nlohmann::json meta = ck.meta();  // format 1: no layout
  for (const char* key : {"format_version", "layout", "shard_size"}) meta.erase(key);
  io::save_checkpoint(dir_ / "old", 3, meta, old);
  fs::copy_file(dir_ / "new" / "metrics.jsonl", dir_ / "old" / "metrics.jsonl");
  // The marker of earlier builds (no manifest): verified through each tensor's own checksum.
  const fs::path old_dir = dir_ / "old" / "checkpoints" / io::checkpoint_dir_name(3);
  std::ofstream(old_dir / "COMPLETE") << "{\"step\": 3, \"world_size\": 1}\n";
  EXPECT_EQ(choose_resume_checkpoint("auto", parse_train_config(config("old"), "c.json"), nullptr, ctx_), old_dir);

  auto resumed = [&](const std::string& run) {
    auto t = std::make_unique<Trainer>(parse_train_config(config(run), "c.json"), ctx_, /*resuming=*/true);
    t->load_checkpoint(*t->latest_checkpoint());
    t->run();
    return losses(*t);
  };
  const std::vector<double> from_new = resumed("new"), from_old = resumed("old");
  ASSERT_FALSE(from_new.empty());
  EXPECT_EQ(from_old, from_new);
}

TEST_F(TrainerTest, ResumeWithAnotherStateStorageIsRefused) {
  {
    Trainer first(parse_train_config(config("run"), "c.json"), ctx_);
    first.run(/*stop_after_step=*/3);
  }
  nlohmann::json c = config("run");
  c["optim"]["state_dtype"] = "fp8_expand";
  Trainer second(parse_train_config(c, "c.json"), ctx_, /*resuming=*/true);
  try {
    second.load_checkpoint(*second.latest_checkpoint());
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("stores the AdamW moment exp_avg as f32 but this config stores it as "
                                         "fp8-expand(e4m3, group 128)"),
              std::string::npos)
        << e.what();
  }
  // A setting that does not change the storage (the group size of FP32 states) resumes.
  nlohmann::json same = config("run");
  same["optim"]["state_group_size"] = 256;
  Trainer third(parse_train_config(same, "c.json"), ctx_, /*resuming=*/true);
  EXPECT_NO_THROW(third.load_checkpoint(*third.latest_checkpoint()));
}

// optim.state_dtype defaults to "auto" (the recipe's storage); runs save the concrete storage (as checkpoints
// of earlier versions did), so a checkpoint resumes under "auto" and under the concrete name alike.
TEST_F(TrainerTest, ResumeAcrossTheAutoStateDtype) {
  {
    Trainer first(parse_train_config(config("run"), "c.json"), ctx_);
    first.run(/*stop_after_step=*/3);
  }
  std::ifstream saved(dir_ / "run" / "config.json");
  EXPECT_EQ(nlohmann::json::parse(saved).at("optim").at("state_dtype"), "fp32");
  for (const char* states : {"auto", "fp32"}) {
    nlohmann::json c = config("run");
    c["optim"]["state_dtype"] = states;
    Trainer again(parse_train_config(c, "c.json"), ctx_, /*resuming=*/true);
    EXPECT_NO_THROW(again.load_checkpoint(*again.latest_checkpoint())) << states;
  }
}

INSTANTIATE_TEST_SUITE_P(StateStorages, TrainerResume, ::testing::Values("fp32", "bf16", "fp8", "fp8_expand"));

TEST_F(TrainerTest, ExistingRunIsNotOverwritten) {
  Trainer a(parse_train_config(config("r"), "r.json"), ctx_);
  a.run(2);
  const auto before = fs::file_size(dir_ / "r" / "metrics.jsonl");
  try {
    Trainer again(parse_train_config(config("r"), "r.json"), ctx_);
    FAIL() << "expected an error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("--resume auto"), std::string::npos) << e.what();
  }
  EXPECT_EQ(fs::file_size(dir_ / "r" / "metrics.jsonl"), before);
}

TEST_F(TrainerTest, CheckpointOfAnotherModelIsRejected) {
  Trainer a(parse_train_config(config("m"), "m.json"), ctx_);
  a.run();
  nlohmann::json other = config("m");
  other["model"]["hidden_size"] = 48;
  other["model"]["num_attention_heads"] = 4;
  Trainer b(parse_train_config(other, "other.json"), ctx_, true);
  try {
    b.load_checkpoint(*b.latest_checkpoint());
    FAIL() << "expected an error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("another model"), std::string::npos) << e.what();
  }
}

TEST_F(TrainerTest, BadInputsNameTheProblem) {
  auto expect_error = [&](nlohmann::json c, const std::string& needle) {
    try {
      Trainer t(parse_train_config(c, "bad.json"), ctx_);
      t.run();
      ADD_FAILURE() << "expected an error containing " << needle;
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  nlohmann::json c = config("bad1");
  c["optim"]["weight_decy"] = 1.0;
  expect_error(c, "did you mean 'optim.weight_decay'");
  c = config("bad2");
  c["data"]["path"] = (dir_ / "missing.bin").string();
  expect_error(c, "missing.bin");
  c = config("bad3");
  c["model"]["vocab_size"] = 32;  // the file says 64
  expect_error(c, "vocabulary of 64");
  c = config("bad4");
  c["data"]["seq_len"] = 100;  // max_position_embeddings is 64
  expect_error(c, "max_position_embeddings");
  // A raw file holding an id past the vocabulary.
  {
    std::ofstream raw(dir_ / "raw.bin", std::ios::binary);
    std::vector<uint16_t> t(2000, 3);
    t[5] = 999;
    raw.write(reinterpret_cast<const char*>(t.data()), static_cast<std::streamsize>(t.size() * 2));
  }
  c = config("bad5");
  c["data"]["path"] = (dir_ / "raw.bin").string();
  c["data"]["format"] = "u16";
  expect_error(c, "999");
}

}  // namespace
}  // namespace coat::train

namespace coat::train {
namespace {

TEST_F(TrainerTest, NonFiniteLossStopsOrSkips) {
  {
    Trainer t(parse_train_config(config("nf_stop"), "nf.json"), ctx_);
    Tensor w = t.model().parameter("model.layers.1.mlp.up_proj.weight").master;
    static_cast<float*>(w.data_ptr())[5] = std::numeric_limits<float>::quiet_NaN();
    try {
      t.train_step();
      FAIL() << "expected an error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("non-finite loss at step 1"), std::string::npos) << e.what();
    }
  }
  nlohmann::json c = config("nf_skip");
  c["train"]["on_nonfinite"] = "skip";
  Trainer t(parse_train_config(c, "nf.json"), ctx_);
  Tensor w = t.model().parameter("model.embed_tokens.weight").master;
  const std::vector<float> before(static_cast<float*>(w.data_ptr()), static_cast<float*>(w.data_ptr()) + w.numel());
  Tensor up = t.model().parameter("model.layers.1.mlp.up_proj.weight").master;
  static_cast<float*>(up.data_ptr())[5] = std::numeric_limits<float>::infinity();
  const StepRecord r = t.train_step();
  EXPECT_TRUE(r.skipped);
  EXPECT_EQ(std::memcmp(before.data(), w.data_ptr(), w.nbytes()), 0);  // nothing updated
}

}  // namespace
}  // namespace coat::train

namespace coat::train {
namespace {

TEST_F(TrainerTest, Bf16MixedPrecisionTracksFp32) {
  Trainer ref(parse_train_config(config("fp32"), "a.json"), ctx_);
  ref.run();
  nlohmann::json c = config("bf16");
  c["precision"]["recipe"] = "bf16";
  auto ctx = ops::make_context(Device::cpu());
  Trainer mixed(parse_train_config(c, "b.json"), ctx);
  // BF16 compute copy beside FP32 masters.
  EXPECT_EQ(mixed.model().parameters()[0].value.dtype(), DType::BF16);
  EXPECT_EQ(mixed.model().parameters()[0].master.dtype(), DType::F32);
  EXPECT_GT(ctx->allocator().memory_report().current(MemoryCategory::MasterWeights), 0u);
  mixed.run();
  // The compute copy is the rounded master after every step.
  const nn::Parameter& p = mixed.model().parameters()[1];
  const Tensor rounded = ops::cast(p.master, DType::BF16);
  EXPECT_EQ(std::memcmp(rounded.data_ptr(), p.value.data_ptr(), p.value.nbytes()), 0);
  // Same data, same init: BF16 losses stay within 1% of FP32 over these steps (stated tolerance).
  for (size_t i = 0; i < ref.history().size(); ++i) {
    EXPECT_NEAR(mixed.history()[i].loss, ref.history()[i].loss, 0.01 * ref.history()[i].loss) << "step " << i + 1;
  }
}

}  // namespace
}  // namespace coat::train
