// train.recompute = blocks reaches the model and changes nothing but memory: the same losses and the same
// parameters, bit for bit, as train.recompute = none over a few steps with gradient accumulation, in fp32
// and bf16 on the CPU.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "coat/data/token_file.h"
#include "coat/ops/runtime.h"
#include "coat/train/trainer.h"

namespace coat::train {
namespace {

namespace fs = std::filesystem;

class RecomputeTraining : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("coat_recompute_" + std::to_string(::getpid()) + "_" + GetParam());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::mt19937 rng(5);
    std::vector<uint32_t> tokens(4000);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = (rng() % 4 == 0) ? rng() % 64 : (i * 7) % 64;
    data::write_token_file(dir_ / "tokens.bin", tokens, data::TokenWidth::U16, 64);
  }
  void TearDown() override { fs::remove_all(dir_); }

  TrainConfig config(const std::string& recompute) const {
    std::ifstream in(std::string(COAT_SOURCE_DIR) + "/configs/test_small.json");
    nlohmann::json c = nlohmann::json::parse(in);
    c["data"]["path"] = (dir_ / "tokens.bin").string();
    c["logging"]["run_dir"] = (dir_ / recompute).string();
    c["logging"]["progress"] = "off";
    c["train"]["recompute"] = recompute;
    c["precision"]["recipe"] = GetParam();
    return parse_train_config(c, "recompute.json");
  }
  fs::path dir_;
};

TEST_P(RecomputeTraining, SameLossesAndParametersBitForBit) {
  ContextPtr ctx = ops::make_context(Device::cpu());
  Trainer keep(config("none"), ctx);
  Trainer again(config("blocks"), ctx);
  ASSERT_EQ(again.model().recompute(), models::Recompute::Blocks);
  ASSERT_EQ(keep.model().recompute(), models::Recompute::None);
  for (int step = 0; step < 3; ++step) {
    const StepRecord a = keep.train_step(), b = again.train_step();
    EXPECT_EQ(b.loss, a.loss) << "step " << step;
    EXPECT_EQ(b.grad_norm, a.grad_norm) << "step " << step;
  }
  for (size_t i = 0; i < keep.model().parameters().size(); ++i) {
    const Tensor& p = keep.model().parameters()[i].master;
    const Tensor& q = again.model().parameters()[i].master;
    ASSERT_EQ(std::memcmp(p.data_ptr(), q.data_ptr(), p.nbytes()), 0) << keep.model().parameters()[i].name;
  }
}

INSTANTIATE_TEST_SUITE_P(Recipes, RecomputeTraining, ::testing::Values("fp32", "bf16"));

}  // namespace
}  // namespace coat::train
