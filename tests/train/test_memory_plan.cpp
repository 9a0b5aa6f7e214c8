// The memory plan against the memory one training step really takes: small Llama and OLMo models on the
// CPU backend, fp32 and bf16 recipes, with and without recomputation. The trainer runs one step (forward,
// backward, AdamW) after its peaks are reset; the allocator's peaks by category are compared with the
// plan: weights, master weights, gradients and optimizer states exactly (the plan counts the same flat
// buffers with the same rounding), activations and the total within 10%. Also: what the tape saves equals
// the plan's saved bytes, the plan's advice when a device is too small, and the strict train.recompute key.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <random>

#include "coat/data/token_file.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/runtime.h"
#include "coat/train/memory_advice.h"
#include "coat/train/trainer.h"
#include "expect_error.h"
#ifdef COAT_WITH_CUDA
#include "coat/backend/cuda/cuda_context.h"
#endif

namespace coat::train {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kVocab = 1000;

class MemoryPlanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("coat_memory_plan_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::mt19937 rng(9);
    std::vector<uint32_t> tokens(20000);
    for (uint32_t& t : tokens) t = rng() % kVocab;
    data::write_token_file(dir_ / "tokens.bin", tokens, data::TokenWidth::U16, kVocab);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // hidden 256, 4 layers, seq 128, micro-batch 4, vocab 1000. Llama: 4 heads over 2 KV heads, untied head;
  // OLMo: LayerNorm without weights, tied head.
  nlohmann::json config(const std::string& arch, const std::string& recipe, const std::string& recompute,
                        const std::string& run) const {
    nlohmann::json c;
    c["model"] = {{"architecture", arch},
                  {"hidden_size", 256},
                  {"intermediate_size", 704},
                  {"num_hidden_layers", 4},
                  {"num_attention_heads", 4},
                  {"num_key_value_heads", arch == "llama" ? 2 : 4},
                  {"vocab_size", kVocab},
                  {"max_position_embeddings", 128},
                  {"tie_word_embeddings", arch == "olmo"}};
    c["data"] = {{"path", (dir_ / "tokens.bin").string()}, {"seq_len", 128}, {"validation_fraction", 0.0}};
    c["train"] = {{"device", "cpu"},
                  {"micro_batch_size", 4},
                  {"global_batch_size", 4},
                  {"max_steps", 1},
                  {"recompute", recompute}};
    c["optim"] = {{"lr", 1e-3}, {"schedule", "constant"}};
    c["precision"] = {{"recipe", recipe}};
    c["dist"] = nlohmann::json::object();
    c["checkpoint"] = nlohmann::json::object();
    c["logging"] = {{"run_dir", (dir_ / run).string()}, {"progress", "off"}};
    return c;
  }

  fs::path dir_;
};

double ratio(size_t planned, size_t measured) {
  return static_cast<double>(planned) / static_cast<double>(measured);
}

class PlanAgainstStep
    : public MemoryPlanTest,
      public ::testing::WithParamInterface<std::tuple<std::string, std::string, std::string>> {};

TEST_P(PlanAgainstStep, MeasuredPeakWithinTenPercent) {
  const auto& [arch, recipe, recompute] = GetParam();
  const TrainConfig cfg = parse_train_config(config(arch, recipe, recompute, "run"), "plan.json");
  ContextPtr ctx = ops::make_context(Device::cpu());
  Trainer trainer(cfg, ctx);
  ctx->allocator().reset_peaks();
  trainer.train_step();
  const MemoryReport measured = ctx->allocator().memory_report();
  const models::MemoryPlan plan = memory_plan(cfg);

  for (MemoryCategory c : {MemoryCategory::Weights, MemoryCategory::MasterWeights, MemoryCategory::Gradients,
                           MemoryCategory::OptimizerState}) {
    EXPECT_EQ(plan.bytes(c), measured.peak(c)) << memory_category_name(c);
  }
  const size_t act_measured = measured.peak(MemoryCategory::Activations);
  const size_t act_planned = plan.bytes(MemoryCategory::Activations);
  std::printf(
      "[%s %s recompute=%s] peak measured %zu planned %zu (%.3f); activations measured %zu planned %zu "
      "(%.3f)\n",
      arch.c_str(), recipe.c_str(), recompute.c_str(), measured.total_peak_bytes, plan.total(),
      ratio(plan.total(), measured.total_peak_bytes), act_measured, act_planned,
      ratio(act_planned, act_measured));
  EXPECT_NEAR(ratio(plan.total(), measured.total_peak_bytes), 1.0, 0.10)
      << measured.to_string() << plan.str();
  EXPECT_NEAR(ratio(act_planned, act_measured), 1.0, 0.10) << measured.to_string() << plan.str();

  // What one forward saves for backward is exactly what the plan counts.
  std::vector<double> ids_v(4 * 128), targets_v(4 * 128);
  for (size_t i = 0; i < ids_v.size(); ++i) {
    ids_v[i] = static_cast<double>((i * 7) % kVocab);
    targets_v[i] = static_cast<double>((i * 11) % kVocab);
  }
  const Tensor ids = ops::from_vector(ctx, {4, 128}, DType::I32, ids_v);
  const Tensor targets = ops::from_vector(ctx, {4, 128}, DType::I32, targets_v);
  autograd::Tape tape;
  trainer.model().forward(tape, ids, targets, -1, 1.0);
  EXPECT_EQ(tape.saved_bytes(), plan.saved_bytes);
}

// Every optimizer-state storage: the plan counts the codes and group metadata exactly as allocated.
TEST_F(MemoryPlanTest, OptimizerStatesOfEveryStorageAreCountedExactly) {
  for (const char* states : {"fp32", "bf16", "fp8", "fp8_expand"}) {
    nlohmann::json doc = config("llama", "bf16", "none", std::string("run_") + states);
    doc["optim"]["state_dtype"] = states;
    doc["optim"]["exp_avg_sq_fp8"] = "e5m2";
    const TrainConfig cfg = parse_train_config(doc, "plan.json");
    ContextPtr ctx = ops::make_context(Device::cpu());
    Trainer trainer(cfg, ctx);
    const size_t measured = ctx->allocator().memory_report().current(MemoryCategory::OptimizerState);
    EXPECT_EQ(memory_plan(cfg).bytes(MemoryCategory::OptimizerState), measured) << states;
  }
}

INSTANTIATE_TEST_SUITE_P(SmallModels, PlanAgainstStep,
                         ::testing::Combine(::testing::Values("llama", "olmo"),
                                            ::testing::Values("fp32", "bf16"),
                                            ::testing::Values("none", "blocks")),
                         [](const auto& info) {
                           return std::get<0>(info.param) + "_" + std::get<1>(info.param) + "_recompute_" +
                                  std::get<2>(info.param);
                         });

TEST_F(MemoryPlanTest, RecomputationShrinksThePlanAndAdviceNamesWhatFits) {
  const TrainConfig keep = parse_train_config(config("llama", "bf16", "none", "a"), "plan.json");
  const TrainConfig again = parse_train_config(config("llama", "bf16", "blocks", "b"), "plan.json");
  const models::MemoryPlan p_keep = memory_plan(keep), p_again = memory_plan(again);
  EXPECT_LT(p_again.bytes(MemoryCategory::Activations), p_keep.bytes(MemoryCategory::Activations) / 2);
  EXPECT_EQ(p_again.bytes(MemoryCategory::Weights), p_keep.bytes(MemoryCategory::Weights));

  // A device just too small for the configured plan but large enough with recomputation.
  const size_t device = (p_keep.total() + p_again.total()) / 2;
  const std::string advice = describe_memory_plan(keep, device);
  EXPECT_NE(advice.find("more than the"), std::string::npos) << advice;
  EXPECT_NE(advice.find("train.recompute=blocks"), std::string::npos) << advice;
  EXPECT_NE(advice.find("train.micro_batch_size="), std::string::npos) << advice;
  // Room to spare: no suggestions.
  EXPECT_EQ(describe_memory_plan(keep, 2 * p_keep.total()).find("suggestions"), std::string::npos);
  // Not even the weights, gradients and states fit.
  const std::string hopeless = describe_memory_plan(keep, p_keep.bytes(MemoryCategory::Weights));
  EXPECT_NE(hopeless.find("alone take"), std::string::npos) << hopeless;
}

TEST_F(MemoryPlanTest, CudaPlanAddsTheWorkspacesAndRoundsToTheCachingAllocator) {
  nlohmann::json c = config("llama", "bf16", "none", "c");
  c["train"]["device"] = "cuda";
  const models::MemoryPlan cuda_plan = memory_plan(parse_train_config(c, "plan.json"));
  const models::MemoryPlan cpu_plan =
      memory_plan(parse_train_config(config("llama", "bf16", "none", "d"), "plan.json"));
  EXPECT_EQ(cpu_plan.bytes(MemoryCategory::Workspace), 0u);
  size_t cublaslt = 0;
  for (const auto& line : cuda_plan.lines) {
    if (line.category == MemoryCategory::Workspace && line.what.rfind("cuBLASLt", 0) == 0)
      cublaslt = line.bytes;
  }
  EXPECT_EQ(cublaslt, size_t{32} << 20);
#ifdef COAT_WITH_CUDA
  EXPECT_EQ(cublaslt, cuda::CudaContext::kCublasLtWorkspaceBytes);
#endif
  EXPECT_GT(cuda_plan.bytes(MemoryCategory::Workspace), cublaslt);  // the attention backward's workspace
  // Every CUDA allocation is a multiple of 512 bytes.
  for (const auto& line : cuda_plan.lines) EXPECT_EQ(line.bytes % 512, 0u) << line.what;
}

TEST_F(MemoryPlanTest, RecomputeKeyIsStrict) {
  nlohmann::json c = config("llama", "fp32", "block", "e");
  test::expect_error_containing([&] { parse_train_config(c, "plan.json"); },
                                "'train.recompute' = \"block\" is not valid");
  c["train"]["recompute"] = "blocks";
  EXPECT_EQ(parse_train_config(c, "plan.json").resolved.at("train").at("recompute"), "blocks");
}

}  // namespace
}  // namespace coat::train
