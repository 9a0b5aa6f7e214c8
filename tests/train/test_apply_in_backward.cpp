// optim.apply_in_backward: each unit updated as soon as the backward has completed its gradients, the block
// units sharing one gradient buffer. The same training as the update after the backward, bit for bit, with
// the gradient memory of one block.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>

#include "coat/data/token_file.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/runtime.h"
#include "coat/train/memory_advice.h"
#include "coat/train/trainer.h"

namespace coat::train {
namespace {

namespace fs = std::filesystem;

class ApplyInBackward : public ::testing::TestWithParam<std::tuple<std::string, std::string, std::string>> {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("coat_apply_in_backward_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::mt19937 rng(11);
    std::vector<uint32_t> tokens(4000);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = (rng() % 4 == 0) ? rng() % 64 : (i * 5) % 64;
    data::write_token_file(dir_ / "tokens.bin", tokens, data::TokenWidth::U16, 64);
  }
  void TearDown() override { fs::remove_all(dir_); }

  /// configs/test_small.json with one micro-batch per step and no clipping, under `recipe`.
  nlohmann::json config(const std::string& run, const std::string& arch, const std::string& recipe,
                        const std::string& recompute) const {
    std::ifstream in(std::string(COAT_SOURCE_DIR) + "/configs/test_small.json");
    nlohmann::json c = nlohmann::json::parse(in);
    c["model"]["architecture"] = arch;
    c["data"]["path"] = (dir_ / "tokens.bin").string();
    c["logging"]["run_dir"] = (dir_ / run).string();
    c["logging"]["progress"] = "off";
    c["train"]["global_batch_size"] = c["train"]["micro_batch_size"];
    c["train"]["recompute"] = recompute;
    c["optim"]["clip_grad_norm"] = 0.0;
    c["precision"]["recipe"] = recipe;
    return c;
  }
  ContextPtr ctx_ = ops::make_context(Device::cpu());
  fs::path dir_;
};

TEST_P(ApplyInBackward, SameTrainingBitForBitWithOneBlockOfGradients) {
  const auto& [arch, recipe, recompute] = GetParam();
  nlohmann::json after = config("after", arch, recipe, recompute);
  nlohmann::json during = config("during", arch, recipe, recompute);
  during["optim"]["apply_in_backward"] = true;
  // Each on its own context: the gradient memory of each is measured.
  const ContextPtr ctx_a = ops::make_context(Device::cpu()), ctx_b = ops::make_context(Device::cpu());
  Trainer a(parse_train_config(after, "a.json"), ctx_a);
  Trainer b(parse_train_config(during, "b.json"), ctx_b);
  int64_t first_a = 0, first_b = 0;  // FP8 weight quantisations in the first step (before any update)
  for (int step = 0; step < 5; ++step) {
    const StepRecord ra = a.train_step();
    const StepRecord rb = b.train_step();
    ASSERT_FALSE(rb.skipped);
    EXPECT_EQ(ra.loss, rb.loss) << "step " << step;
    EXPECT_EQ(ra.grad_norm, rb.grad_norm) << "step " << step;
    if (step == 0) {
      first_a = a.model().store().fp8_quantizations();
      first_b = b.model().store().fp8_quantizations();
    }
  }
  // Per-tensor FP8 weights: after the first step every quantisation took its scale from the step's maxima
  // (no amax pass over the masters), both ways of applying the step.
  const models::UnitStore& store_a = a.model().store();
  const models::UnitStore& store_b = b.model().store();
  EXPECT_EQ(store_a.fp8_quantizations_from_maxima(), store_a.fp8_quantizations() - first_a);
  EXPECT_EQ(store_b.fp8_quantizations_from_maxima(), store_b.fp8_quantizations() - first_b);
  EXPECT_EQ(store_a.fp8_quantizations_from_maxima() > 0, recipe == "coat" || recipe == "fp8");
  EXPECT_EQ(a.optimizer().step_count(), b.optimizer().step_count());
  for (size_t i = 0; i < a.model().parameters().size(); ++i) {
    const Tensor& p = a.model().parameters()[i].master;
    const Tensor& q = b.model().parameters()[i].master;
    ASSERT_EQ(std::memcmp(p.data_ptr(), q.data_ptr(), p.nbytes()), 0) << a.model().parameters()[i].name;
  }
  const auto sa = a.optimizer().state_tensors();
  const auto sb = b.optimizer().state_tensors();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i)
    ASSERT_EQ(std::memcmp(sa[i].second.data_ptr(), sb[i].second.data_ptr(), sa[i].second.nbytes()), 0) << sa[i].first;

  // The gradients: every block unit views one buffer; the plan counts one block's worth, as allocated.
  const auto& units = b.model().units();
  for (const auto& u : units) {
    if (u.layer > 0) {
      EXPECT_TRUE(u.grad.shares_storage_with(units[1].grad)) << u.name;
    }
  }
  const size_t measured = ctx_b->allocator().memory_report().current(MemoryCategory::Gradients);
  EXPECT_EQ(measured, memory_plan(parse_train_config(during, "b.json")).bytes(MemoryCategory::Gradients));
  // Two blocks' gradients against one (and the embedding's and head's in both).
  EXPECT_LT(measured, ctx_a->allocator().memory_report().current(MemoryCategory::Gradients));
}

INSTANTIATE_TEST_SUITE_P(
    Recipes, ApplyInBackward,
    ::testing::Values(std::make_tuple("llama", "fp32", "none"), std::make_tuple("llama", "bf16", "none"),
                      std::make_tuple("llama", "coat", "none"), std::make_tuple("llama", "fp8", "blocks"),
                      std::make_tuple("olmo", "coat", "blocks")),
    [](const auto& info) {
      return std::get<0>(info.param) + "_" + std::get<1>(info.param) + "_" + std::get<2>(info.param);
    });

TEST_F(ApplyInBackward, NeedsOneMicroBatchAndNoClipping) {
  nlohmann::json c = config("r", "llama", "bf16", "none");
  c["optim"]["apply_in_backward"] = true;
  c["train"]["global_batch_size"] = 4;
  try {
    parse_train_config(c, "c.json");
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("train.global_batch_size"), std::string::npos) << e.what();
  }
  c = config("r", "llama", "bf16", "none");
  c["optim"]["apply_in_backward"] = true;
  c["optim"]["clip_grad_norm"] = 1.0;
  try {
    parse_train_config(c, "c.json");
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("optim.clip_grad_norm"), std::string::npos) << e.what();
  }
}

// A non-finite loss: every backward runs (nothing is read before the step ends), but the optimizer's device
// flag, raised by the loss before the backward (and by the units' gradients), keeps every update from
// running: params, compute copies, moments and the step count stay as they were.
TEST_F(ApplyInBackward, NonFiniteLossUpdatesNothing) {
  for (const char* recipe : {"fp32", "bf16"}) {
    nlohmann::json c = config(std::string("nf_") + recipe, "llama", recipe, "none");
    c["optim"]["apply_in_backward"] = true;
    c["train"]["on_nonfinite"] = "skip";
    Trainer t(parse_train_config(c, "c.json"), ctx_);
    ASSERT_FALSE(t.train_step().skipped);  // non-zero moments first
    // The forward reads the compute copy: poison it (the master too, where they are one tensor).
    const nn::Parameter& up = t.model().parameter("model.layers.1.mlp.up_proj.weight");
    Tensor poisoned = up.value.slice(0, 0, 1).flatten().slice(0, 5, 6);
    ops::fill_(poisoned, std::numeric_limits<double>::quiet_NaN());
    std::vector<std::vector<uint8_t>> before;
    for (const nn::Parameter& p : t.model().parameters()) {
      before.push_back(ops::to_bytes(p.master));
      before.push_back(ops::to_bytes(p.value));
    }
    for (const auto& [name, s] : t.optimizer().state_tensors()) before.push_back(ops::to_bytes(s));
    const StepRecord r = t.train_step();
    EXPECT_TRUE(r.skipped) << recipe;
    EXPECT_FALSE(std::isfinite(r.loss)) << recipe;
    EXPECT_EQ(t.optimizer().step_count(), 1) << recipe;
    size_t i = 0;
    for (const nn::Parameter& p : t.model().parameters()) {
      EXPECT_EQ(ops::to_bytes(p.master), before[i++]) << recipe << " " << p.name << " (master)";
      EXPECT_EQ(ops::to_bytes(p.value), before[i++]) << recipe << " " << p.name << " (compute copy)";
    }
    for (const auto& [name, s] : t.optimizer().state_tensors()) EXPECT_EQ(ops::to_bytes(s), before[i++]) << name;
  }
}

}  // namespace
}  // namespace coat::train
