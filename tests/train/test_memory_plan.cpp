// The memory plan against the memory one training step really takes: small Llama and OLMo models on the
// CPU backend, every recipe (fp32, bf16, fp8, fp8_block, coat), with and without recomputation. The trainer
// runs one step (forward, backward, AdamW) after its peaks are reset; the allocator's peaks by category are
// compared with the plan: weights, master weights, gradients and optimizer states exactly (the plan counts the
// same flat buffers with the same rounding), activations and the total within 10%. Also: what the tape saves equals
// the plan's saved bytes, the plan's advice when a device is too small, and the strict train.recompute key.
// The fp8, fp8_block and coat recipes (FP8 weight caches, compressed saved activations, precision.bf16_layers)
// against hand-computed bytes.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <random>

#include "coat/data/token_file.h"
#include "coat/models/unit_layout.h"
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
  // OLMo: LayerNorm without weights, tied head. Intermediate 704, but 768 under fp8_block, whose linear widths
  // must be multiples of its 128 block edge.
  nlohmann::json config(const std::string& arch, const std::string& recipe, const std::string& recompute,
                        const std::string& run) const {
    nlohmann::json c;
    c["model"] = {{"architecture", arch},
                  {"hidden_size", 256},
                  {"intermediate_size", recipe == "fp8_block" ? 768 : 704},
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
    // "<recipe>_attn8": the recipe with precision.compress_attention; "<recipe>_wt": with
    // precision.cache_weight_transpose = false (W^T made in the backward).
    const bool attn8 = recipe.ends_with("_attn8"), wt = recipe.ends_with("_wt");
    const size_t suffix = attn8 ? 6 : wt ? 3 : 0;
    c["precision"] = {{"recipe", recipe.substr(0, recipe.size() - suffix)}};
    if (attn8) c["precision"]["compress_attention"] = true;
    if (wt) c["precision"]["cache_weight_transpose"] = false;
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

// "<arch>_<recipe>_recompute_<recompute>", the name of a PlanAgainstStep case.
std::string plan_case_name(const ::testing::TestParamInfo<PlanAgainstStep::ParamType>& info) {
  return std::get<0>(info.param) + "_" + std::get<1>(info.param) + "_recompute_" + std::get<2>(info.param);
}

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
                                            ::testing::Values("fp32", "bf16", "fp8", "fp8_block", "coat",
                                                              "coat_attn8"),
                                            ::testing::Values("none", "blocks")),
                         plan_case_name);
// train.recompute = qkv (not under fp8_block: RecomputeKeyIsStrict): attention keeps what makes q, k and v
// again, and the backward holds them again at the attention.
INSTANTIATE_TEST_SUITE_P(QkvRemade, PlanAgainstStep,
                         ::testing::Combine(::testing::Values("llama", "olmo"),
                                            ::testing::Values("fp32", "bf16", "fp8", "coat", "coat_attn8"),
                                            ::testing::Values("qkv")),
                         plan_case_name);

// precision.cache_weight_transpose = false: the cache keeps W's codes only, and the backward's W^T of one linear
// at a time is counted with it (the Weights peak is compared exactly).
INSTANTIATE_TEST_SUITE_P(WeightTransposeInBackward, PlanAgainstStep,
                         ::testing::Combine(::testing::Values("llama", "olmo"), ::testing::Values("fp8_wt", "coat_wt"),
                                            ::testing::Values("none", "qkv", "blocks")),
                         plan_case_name);

// The bytes of the activation line whose description starts with `start`.
size_t activation_line(const models::MemoryPlan& p, const std::string& start) {
  for (const auto& line : p.lines) {
    if (line.category == MemoryCategory::Activations && line.what.rfind(start, 0) == 0) return line.bytes;
  }
  ADD_FAILURE() << "no activation line starting with '" << start << "' in\n" << p.str();
  return 0;
}

// The FP8 recipes against hand-computed bytes, for the Llama config above (hidden d 256, 4 heads of 64 over
// 2 KV heads, intermediate F 704, 4 blocks, vocab 1000) and B*T = 512 tokens: fp8 adds the FP8 weight cache
// and saves what bf16 saves; coat compresses what its blocks save; precision.bf16_layers keep blocks as bf16.
constexpr size_t kTokens = 4 * 128;
// Bytes per token that one block saves for its backward under bf16 (and fp8).
constexpr size_t kBf16Block = 2 * 256 + 4               // input norm: x in bf16, rstd in f32
                              + 2 * 256                 // q/k/v projection: the norm's output
                              + 2 * (256 + 2 * 128)     // attention: q, k after RoPE, v
                              + 2 * 256 + 4 * 4         // attention: output, log-sum-exp per head
                              + 2 * 256 + 4             // post-attention norm: h, rstd
                              + 2 * 256                 // gate/up projection: the norm's output
                              + 2 * 2 * 704 + 2 * 704;  // swiglu: gate and up; down projection: their product
// The same under coat: norm and SwiGLU inputs as e4m3 with one f32 scale per 16, projection inputs as e4m3.
constexpr size_t kCoatBlock = (256 + 256 / 16 * 4) + 4        // input norm: x compressed, rstd
                              + 256                           // q/k/v projection: e4m3 transposed input
                              + 2 * (256 + 2 * 128)           // attention: q, k, v (bf16)
                              + 2 * 256 + 4 * 4               // attention: output (o_proj's input), lse
                              + (256 + 256 / 16 * 4) + 4      // post-attention norm: h compressed, rstd
                              + 256                           // gate/up projection: e4m3 transposed input
                              + (2 * 704 + 2 * 704 / 16 * 4)  // swiglu: gate and up compressed
                              + 704;                          // down projection: e4m3 transposed input
// Per coat block, besides: the per-tensor scale and its inverse (f32 [1]) of its three e4m3 inputs.
constexpr size_t kCoatScalars = 3 * 2;
// The final norm (x, rstd), the LM head's input, the logits' gradient; the token ids.
constexpr size_t kHeadAndIds = kTokens * (2 * 256 + 4 + 2 * 256 + 2 * 1000) + kTokens * 4;
// The FP8 weight cache of one block: codes of W and W^T of qkv [512, 256], o [256, 256], gate_up [1408, 256],
// down [256, 704], and two f32 [1] scales per weight (a 256-byte CPU allocation each).
constexpr size_t kCacheBlock = 2 * (512 * 256 + 256 * 256 + 1408 * 256 + 256 * 704) + 4 * 2 * 256;

TEST_F(MemoryPlanTest, FP8RecipesSaveWhatTheirBlocksKeep) {
  const auto plan = [&](const std::string& recipe, const std::string& recompute, nlohmann::json bf16_layers) {
    nlohmann::json doc = config("llama", recipe, recompute, "r");
    doc["precision"]["bf16_layers"] = std::move(bf16_layers);
    return memory_plan(parse_train_config(doc, "plan.json"));
  };
  const nlohmann::json none = nlohmann::json::array();
  const size_t coat_block = kTokens * kCoatBlock + kCoatScalars * 4;
  // fp8 keeps the qkv, gate/up and down inputs (256, 256, 704) as e4m3 transposes, with their scales, as coat.
  const size_t fp8_per_token = kBf16Block - (256 + 256 + 704);
  EXPECT_EQ(plan("bf16", "none", none).saved_bytes, 4 * kTokens * kBf16Block + kHeadAndIds);
  EXPECT_EQ(plan("fp8", "none", none).saved_bytes,
            4 * (kTokens * fp8_per_token + kCoatScalars * 4) + kHeadAndIds);
  EXPECT_EQ(plan("coat", "none", none).saved_bytes, 4 * coat_block + kHeadAndIds);
  EXPECT_EQ(plan("coat", "none", {0, -1}).saved_bytes,
            2 * coat_block + 2 * kTokens * kBf16Block + kHeadAndIds);
  // Recomputing, every recipe keeps the blocks' BF16 inputs alone.
  for (const char* recipe : {"bf16", "fp8", "coat"}) {
    EXPECT_EQ(plan(recipe, "blocks", none).saved_bytes, 4 * kTokens * 2 * 256 + kHeadAndIds) << recipe;
  }

  // The allocations of the kept blocks (every tensor here is a multiple of the CPU's 256-byte rounding but
  // the f32 [1] scales, 256 bytes each).
  const auto blocks_line = [](const models::MemoryPlan& p) {
    return activation_line(p, "saved by 4 blocks");
  };
  const size_t coat_block_allocated = kTokens * kCoatBlock + kCoatScalars * 256;
  EXPECT_EQ(blocks_line(plan("coat", "none", none)), 4 * coat_block_allocated);
  EXPECT_EQ(blocks_line(plan("coat", "none", {-4, 2})), 2 * coat_block_allocated + 2 * kTokens * kBf16Block);
  EXPECT_EQ(blocks_line(plan("fp8", "none", none)), 4 * (kTokens * fp8_per_token + kCoatScalars * 256));
}

// What one forward of the FP8 recipes saves for backward is exactly what the plan counts (the allocations by
// category are compared once the FP8 weight cache is allocated as Weights). The model takes the config's
// recipe with its bf16_layers (recipe_of).
TEST_F(MemoryPlanTest, TapeSavesWhatThePlanCountsUnderFP8Recipes) {
  std::vector<double> ids_v(4 * 128), targets_v(4 * 128);
  for (size_t i = 0; i < ids_v.size(); ++i) {
    ids_v[i] = static_cast<double>((i * 7) % kVocab);
    targets_v[i] = static_cast<double>((i * 11) % kVocab);
  }
  const auto check = [&](const std::string& arch, const std::string& recipe,
                         const nlohmann::json& bf16_layers, bool compress_attention = false) {
    nlohmann::json doc = config(arch, recipe, "none",
                                "run_" + arch + recipe + std::to_string(bf16_layers.size()) +
                                    (compress_attention ? "_attn8" : ""));
    doc["precision"]["bf16_layers"] = bf16_layers;
    doc["precision"]["compress_attention"] = compress_attention;
    const TrainConfig cfg = parse_train_config(doc, "plan.json");
    ContextPtr ctx = ops::make_context(Device::cpu());
    Trainer trainer(cfg, ctx);
    trainer.model().set_recipe(recipe_of(cfg));
    autograd::Tape tape;
    trainer.model().forward(tape, ops::from_vector(ctx, {4, 128}, DType::I32, ids_v),
                            ops::from_vector(ctx, {4, 128}, DType::I32, targets_v), -1, 1.0);
    EXPECT_EQ(tape.saved_bytes(), memory_plan(cfg).saved_bytes)
        << arch << " " << recipe << " " << bf16_layers << " compress_attention " << compress_attention;
  };
  for (const char* arch : {"llama", "olmo"}) {
    for (const char* recipe : {"fp8", "fp8_block", "coat"}) check(arch, recipe, nlohmann::json::array());
  }
  check("llama", "coat", {1, -1});
  check("llama", "fp8_block", {0});
  // Attention's saved tensors compressed: q, k, v under every recipe, the output where the o projection keeps
  // its own FP8 input (not in BF16 blocks).
  for (const char* recipe : {"bf16", "fp8", "fp8_block", "coat"}) check("llama", recipe, nlohmann::json::array(), true);
  check("olmo", "coat", nlohmann::json::array(), true);
  check("llama", "coat", {1, -1}, true);
}

TEST_F(MemoryPlanTest, FP8RecipesAddTheWeightCache) {
  const auto plan = [&](const std::string& recipe, nlohmann::json bf16_layers) {
    nlohmann::json doc = config("llama", recipe, "none", "r");
    doc["precision"]["bf16_layers"] = std::move(bf16_layers);
    doc["optim"]["state_dtype"] = "fp32";
    return memory_plan(parse_train_config(doc, "plan.json"));
  };
  const models::MemoryPlan bf16 = plan("bf16", nlohmann::json::array());
  const size_t weights = bf16.bytes(MemoryCategory::Weights);
  // A block with FP8 linears only drops its BF16 copy (one allocation of the unit, rounded to 256 bytes)
  // and keeps BF16 copies of its two norm weights [256] (512 bytes each) beside its FP8 cache.
  const int64_t block_numel = models::unit_layouts(parse_train_config(config("llama", "bf16", "none", "r"), "p.json").model)
                                  .at(1)
                                  .numel;
  const size_t block_bf16 = (static_cast<size_t>(block_numel) * 2 + 255) / 256 * 256;
  // And the optimizer step's maxima of its per-tensor FP8 weights: an F32 per 128 elements of the unit.
  const size_t maxima = (static_cast<size_t>((block_numel + 127) / 128) * 4 + 255) / 256 * 256;
  const size_t fp8_block = kCacheBlock + 2 * 512 - block_bf16 + maxima;
  EXPECT_EQ(plan("fp8", nlohmann::json::array()).bytes(MemoryCategory::Weights), weights + 4 * fp8_block);
  EXPECT_EQ(plan("coat", nlohmann::json::array()).bytes(MemoryCategory::Weights), weights + 4 * fp8_block);
  EXPECT_EQ(plan("coat", {1, -1, 3}).bytes(MemoryCategory::Weights), weights + 2 * fp8_block);
  for (const char* recipe : {"fp8", "coat"}) {
    const models::MemoryPlan p = plan(recipe, {2});
    for (MemoryCategory c :
         {MemoryCategory::MasterWeights, MemoryCategory::Gradients, MemoryCategory::OptimizerState})
      EXPECT_EQ(p.bytes(c), bf16.bytes(c)) << recipe << " " << memory_category_name(c);
    EXPECT_NE(p.str().find("FP8 weight cache: E4M3 W and W^T of 12 linears in 3 blocks"), std::string::npos)
        << p.str();
  }
  EXPECT_EQ(bf16.str().find("FP8 weight cache"), std::string::npos);
  // W^T made in the backward: each block keeps W's codes only, and the largest W^T (gate_up's, [256, 1408])
  // is counted once.
  constexpr size_t kTransposeBlock = 512 * 256 + 256 * 256 + 1408 * 256 + 256 * 704;
  for (const char* recipe : {"fp8_wt", "coat_wt"}) {
    const models::MemoryPlan p = plan(recipe, nlohmann::json::array());
    EXPECT_EQ(p.bytes(MemoryCategory::Weights), weights + 4 * (fp8_block - kTransposeBlock) + 1408 * 256) << recipe;
    EXPECT_NE(p.str().find("FP8 weight cache: E4M3 W, one W^T at a time, of 16 linears in 4 blocks"),
              std::string::npos)
        << p.str();
    EXPECT_NE(p.str().find("1 byte each"), std::string::npos) << p.str();
  }

  // Every block in bf16: the fp8 and coat plans are the bf16 plan, line by line.
  for (const char* recipe : {"fp8", "coat"}) {
    for (const char* recompute : {"none", "blocks"}) {
      nlohmann::json doc = config("llama", recipe, recompute, "r");
      doc["precision"]["bf16_layers"] = {0, 1, 2, 3};
      doc["optim"]["state_dtype"] = "fp32";
      const models::MemoryPlan all_bf16 = memory_plan(parse_train_config(doc, "plan.json"));
      const models::MemoryPlan reference =
          memory_plan(parse_train_config(config("llama", "bf16", recompute, "r"), "plan.json"));
      EXPECT_EQ(all_bf16.saved_bytes, reference.saved_bytes);
      ASSERT_EQ(all_bf16.lines.size(), reference.lines.size()) << all_bf16.str() << reference.str();
      for (size_t i = 0; i < reference.lines.size(); ++i) {
        EXPECT_EQ(all_bf16.lines[i].bytes, reference.lines[i].bytes) << reference.lines[i].what;
        EXPECT_EQ(all_bf16.lines[i].what, reference.lines[i].what);
      }
    }
  }
}

// fp8_block: the weight cache holds the codes of W and W^T as fp8's does, and the F32 scales of their 128x128
// blocks [rows/128, round_up(cols/128, 4)] instead of two per-tensor scalars; its linear inputs with a scale per
// 1x128 group instead of per tensor.
// A model whose scale tensors exceed the CPU allocator's 256-byte rounding: hidden 1024 (8 heads of 128, 8 KV
// heads), intermediate 2816. Per block, in floats (bytes rounded to 256):
//   qkv [3072, 1024]: W [24, 8] = 192 (768 B), W^T [8, 24] = 192 (768 B)
//   o [1024, 1024]:   [8, 8] = 64 (256 B) twice
//   gate_up [5632, 1024]: W [44, 8] = 352 (1408 -> 1536 B), W^T [8, 44] = 352 (1536 B)
//   down [1024, 2816]: W [8, round_up(22, 4) = 24] = 192 (768 B), W^T [22, 8] = 176 (704 -> 768 B)
// = 6656 bytes, against 4 weights x 2 scalars x 256 bytes = 2048 under fp8.
TEST_F(MemoryPlanTest, Fp8BlockPlansItsBlockScales) {
  const auto plan = [&](const std::string& recipe) {
    nlohmann::json doc = config("llama", recipe, "none", "r");
    doc["model"]["hidden_size"] = 1024;
    doc["model"]["num_attention_heads"] = 8;
    doc["model"]["num_key_value_heads"] = 8;
    doc["model"]["intermediate_size"] = 2816;
    return memory_plan(parse_train_config(doc, "plan.json"));
  };
  const models::MemoryPlan fp8 = plan("fp8"), block = plan("fp8_block");
  // fp8's blocks also keep the optimizer step's maxima (an F32 per 128 elements of the unit, for their
  // per-tensor scales); fp8_block's do not.
  const size_t unit = 3072 * 1024 + 1024 * 1024 + 5632 * 1024 + 1024 * 2816 + 2 * 1024;
  const size_t maxima = (unit / 128 * 4 + 255) / 256 * 256;
  EXPECT_EQ(block.bytes(MemoryCategory::Weights),
            fp8.bytes(MemoryCategory::Weights) + 4 * (6656 - 2048) - 4 * maxima);
  // Both keep the q/k/v, gate/up and down inputs as E4M3 transposes (a byte per value): fp8_block with an F32
  // scale per 1x128 group, fp8 with one scale and its inverse (F32 [1] each) per tensor.
  const TrainConfig parsed = parse_train_config(config("llama", "fp8", "none", "r"), "plan.json");
  const int64_t tokens = parsed.train.micro_batch_size * parsed.data.seq_len;
  const int64_t layers = parsed.model.num_hidden_layers;
  int64_t larger = 0;
  for (int64_t width : {1024, 1024, 2816}) larger += tokens * width / 128 * 4 - 2 * 4;
  EXPECT_EQ(block.saved_bytes - fp8.saved_bytes, layers * larger);
  for (MemoryCategory c : {MemoryCategory::MasterWeights, MemoryCategory::Gradients, MemoryCategory::OptimizerState})
    EXPECT_EQ(block.bytes(c), fp8.bytes(c)) << memory_category_name(c);  // fp32 AdamW states under auto
  EXPECT_NE(block.str().find("E4M3 W and W^T of 16 linears in 4 blocks"), std::string::npos) << block.str();
  EXPECT_NE(block.str().find("128x128 block scales"), std::string::npos) << block.str();
  const std::string words = describe_memory_plan(parse_train_config(config("llama", "fp8_block", "none", "r"),
                                                                    "plan.json"), 0);
  EXPECT_NE(words.find("fp8_block: FP8 (e4m3) copies of the block linears' weights and their transposes (one "
                       "scale per 128x128 block"), std::string::npos) << words;
  EXPECT_NE(words.find("linear inputs saved in e4m3 (1x128 groups along the tokens"), std::string::npos) << words;
}

// Under coat the optimizer states default to fp8_expand; the plan counts them so and says which recipe.
TEST_F(MemoryPlanTest, CoatPlanDescribesItsRecipe) {
  const TrainConfig coat = parse_train_config(config("llama", "coat", "none", "r"), "plan.json");
  nlohmann::json expand = config("llama", "bf16", "none", "r");
  expand["optim"]["state_dtype"] = "fp8_expand";
  EXPECT_EQ(memory_plan(coat).bytes(MemoryCategory::OptimizerState),
            memory_plan(parse_train_config(expand, "plan.json")).bytes(MemoryCategory::OptimizerState));
  const std::string words = describe_memory_plan(coat, 0);
  EXPECT_EQ(words.find("not available"), std::string::npos) << words;
  EXPECT_NE(words.find("coat: FP8 (e4m3) copies of the block linears' weights"), std::string::npos) << words;
  EXPECT_NE(words.find("saved activations compressed"), std::string::npos) << words;
  EXPECT_NE(words.find("norm and SwiGLU inputs in e4m3 with 1x16 group scales"), std::string::npos) << words;
  // checkpoint.async's host copy: the masters and the (fp8_expand) states.
  const models::MemoryPlan coat_plan = memory_plan(coat);
  const std::string copy = models::format_bytes(static_cast<double>(
      coat_plan.bytes(MemoryCategory::MasterWeights) + coat_plan.bytes(MemoryCategory::OptimizerState)));
  EXPECT_NE(words.find("plus " + copy + " of"), std::string::npos) << words;
  EXPECT_NE(words.find("memory for the checkpoint snapshot (checkpoint.async"), std::string::npos) << words;
  // The disk: the same bytes per rank and save, keep_last + 1 of them at most.
  TrainConfig keep3 = coat;
  keep3.checkpoint.keep_last = 3;
  EXPECT_NE(describe_memory_plan(keep3, 0).find("checkpoints on disk: about " + copy +
                                                " per rank and save; checkpoint.keep_last = 3 holds up to 4 of them"),
            std::string::npos)
      << describe_memory_plan(keep3, 0);
  keep3.checkpoint.keep_last = 0;
  EXPECT_NE(describe_memory_plan(keep3, 0).find("checkpoint.keep_last = 0 keeps every one"), std::string::npos);
  // Against the host memory available (given): the copy fits or not; not compared without it.
  const uint64_t copy_bytes = coat_plan.bytes(MemoryCategory::MasterWeights) + coat_plan.bytes(MemoryCategory::OptimizerState);
  EXPECT_EQ(words.find("host memory here"), std::string::npos) << words;
  EXPECT_NE(describe_memory_plan(coat, 0, copy_bytes).find("the snapshot copy of one rank fits"), std::string::npos);
  EXPECT_NE(describe_memory_plan(coat, 0, copy_bytes - 1).find("does NOT fit: set checkpoint.async = false"),
            std::string::npos);
  TrainConfig sync = coat;
  sync.checkpoint.async = false;
  EXPECT_EQ(describe_memory_plan(sync, 0, 1).find("checkpoint snapshot"), std::string::npos);
  EXPECT_EQ(describe_memory_plan(sync, 0, 1).find("host memory here"), std::string::npos);
  nlohmann::json fp8 = config("llama", "fp8", "none", "r");
  fp8["precision"]["bf16_layers"] = {-1, 0};
  const std::string fp8_words = describe_memory_plan(parse_train_config(fp8, "plan.json"), 0);
  EXPECT_NE(fp8_words.find("fp8: FP8 (e4m3) copies"), std::string::npos) << fp8_words;
  EXPECT_NE(fp8_words.find("linear inputs saved in e4m3 (the transposes the forward quantised, as the wgrad "
                           "takes them), the other saved activations in BF16; blocks 0, 3 in bf16 "
                           "(precision.bf16_layers)"),
            std::string::npos)
      << fp8_words;
}

// The widest points of a coat block. Its forward: every intermediate stays referenced until the block
// returns, so besides what it saves the block holds its input x, the norms' outputs a and m and the residual
// h (d each), gate and up (2F), and at the down projection the SwiGLU output (F), its e4m3 codes (F bytes)
// and the output (d), all BF16 but the codes. Its backward, at the SwiGLU: the block output's gradient (d),
// the product's gradient (F), the gradients of gate and up (2F) and gate and up restored (2F), while the
// product's e4m3 copy and its two scales are freed. The forward is wider for F = 704, the backward for F =
// 1408.
TEST_F(MemoryPlanTest, CoatBlocksPeakWhereTheirWidestPointIs) {
  const models::MemoryPlan forward =
      memory_plan(parse_train_config(config("llama", "coat", "none", "r"), "plan.json"));
  EXPECT_EQ(forward.activation_peak, "in the forward of block 3") << forward.str();
  EXPECT_EQ(activation_line(forward, "saved by 4 blocks"), 4 * (kTokens * kCoatBlock + kCoatScalars * 256));
  EXPECT_EQ(activation_line(forward, "the block's input and tensors alive"),
            kTokens * (4 * 2 * 256 + 2 * 2 * 704 + 2 * 704 + 704 + 2 * 256));

  nlohmann::json wide = config("llama", "coat", "none", "r");
  wide["model"]["intermediate_size"] = 1408;
  const models::MemoryPlan backward = memory_plan(parse_train_config(wide, "plan.json"));
  EXPECT_EQ(backward.activation_peak, "in the last block's backward") << backward.str();
  EXPECT_EQ(activation_line(backward, "gradients alive"),
            kTokens * (2 * 256 + 2 * 1408 + 2 * 2 * 1408 + 2 * 2 * 1408 - 1408) - 2 * 256);

  // Recomputing, the last block runs forward again beside every block's input (its own is not among what it
  // saves) and the gradient of its output.
  const models::MemoryPlan again =
      memory_plan(parse_train_config(config("llama", "coat", "blocks", "r"), "plan.json"));
  EXPECT_EQ(again.activation_peak, "in the last block's forward run again") << again.str();
  EXPECT_EQ(activation_line(again, "block inputs kept by 4 recomputed blocks"), 4 * kTokens * 2 * 256);
  EXPECT_EQ(activation_line(again, "the last block run again"),
            kTokens * kCoatBlock + kCoatScalars * 256 + kTokens * 2 * 256);
  EXPECT_EQ(activation_line(again, "tensors alive at the widest point of the block's forward"),
            kTokens * (3 * 2 * 256 + 2 * 2 * 704 + 2 * 704 + 704 + 2 * 256));
}

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
  // Just too small for keeping q, k and v: making them again (train.recompute=qkv) comes first, at the
  // configured micro-batch; under fp8_block, which cannot, it is not named.
  const TrainConfig qkv = parse_train_config(config("llama", "bf16", "qkv", "q"), "plan.json");
  const size_t qkv_total = memory_plan(qkv).total();
  ASSERT_LT(qkv_total, p_keep.total());
  const std::string qkv_advice = describe_memory_plan(keep, (qkv_total + p_keep.total()) / 2);
  const size_t first = qkv_advice.find("train.recompute=qkv");
  EXPECT_NE(first, std::string::npos) << qkv_advice;
  EXPECT_LT(first, qkv_advice.find("train.recompute=blocks")) << qkv_advice;
  const TrainConfig blocked = parse_train_config(config("llama", "fp8_block", "none", "f"), "plan.json");
  const std::string blocked_advice = describe_memory_plan(blocked, memory_plan(blocked).total() / 2);
  EXPECT_EQ(blocked_advice.find("train.recompute=qkv"), std::string::npos) << blocked_advice;
  // Just too small for keeping the FP8 weights' transposes (coat): making them in the backward comes first, with
  // its planned total; not named where they are not kept (bf16, fp8_block) or already made.
  const TrainConfig coat_kept = parse_train_config(config("llama", "coat", "none", "c"), "plan.json");
  const TrainConfig coat_wt = parse_train_config(config("llama", "coat_wt", "none", "w"), "plan.json");
  const size_t wt_total = memory_plan(coat_wt).total();
  ASSERT_LT(wt_total, memory_plan(coat_kept).total());
  const std::string wt_advice = describe_memory_plan(coat_kept, wt_total);
  const size_t wt_first = wt_advice.find("precision.cache_weight_transpose=false");
  EXPECT_NE(wt_first, std::string::npos) << wt_advice;
  EXPECT_NE(wt_advice.find(models::format_bytes(static_cast<double>(wt_total))), std::string::npos) << wt_advice;
  EXPECT_LT(wt_first, wt_advice.find("train.recompute=")) << wt_advice;
  // The suggestion's spelling (the plan's own description of coat_wt says "= false", with spaces).
  EXPECT_EQ(describe_memory_plan(coat_kept, wt_total - 1).find("cache_weight_transpose=false"), std::string::npos);
  EXPECT_EQ(describe_memory_plan(coat_wt, wt_total / 2).find("cache_weight_transpose=false"), std::string::npos);
  EXPECT_EQ(blocked_advice.find("cache_weight_transpose=false"), std::string::npos) << blocked_advice;
  EXPECT_EQ(describe_memory_plan(keep, device).find("cache_weight_transpose=false"), std::string::npos);
  // Just the room of the optimizer applied during the backward (one block's gradients): that is suggested.
  TrainConfig shared = keep;
  shared.optim.apply_in_backward = true;
  shared.train.global_batch_size = shared.train.micro_batch_size;
  const size_t shared_total = memory_plan(shared).total();
  ASSERT_LT(shared_total, p_keep.total());
  const std::string in_backward = describe_memory_plan(keep, shared_total);
  EXPECT_NE(in_backward.find("optim.apply_in_backward=true"), std::string::npos) << in_backward;
  EXPECT_NE(in_backward.find(models::format_bytes(static_cast<double>(shared_total))), std::string::npos)
      << in_backward;
  // Not even the weights, gradients and states fit.
  const std::string hopeless = describe_memory_plan(keep, p_keep.bytes(MemoryCategory::Weights));
  EXPECT_NE(hopeless.find("alone take"), std::string::npos) << hopeless;
  EXPECT_NE(hopeless.find("optim.state_dtype = bf16, fp8_expand"), std::string::npos) << hopeless;
  // FP8 states already (coat's default): only sharding is left to suggest.
  const TrainConfig coat = parse_train_config(config("llama", "coat", "none", "c"), "plan.json");
  const std::string coat_hopeless =
      describe_memory_plan(coat, memory_plan(coat).bytes(MemoryCategory::Weights));
  EXPECT_NE(coat_hopeless.find("alone take"), std::string::npos) << coat_hopeless;
  EXPECT_EQ(coat_hopeless.find("optim.state_dtype"), std::string::npos) << coat_hopeless;
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
  EXPECT_EQ(size_t{128 * 128 * (4 + 8)}, cuda::ExpandTables::kBytes);  // the plan's expansion table line
#endif
  EXPECT_GT(cuda_plan.bytes(MemoryCategory::Workspace), cublaslt);  // the attention backward's workspace
  // FP8 moments with range expansion (coat) add the context's expansion tables, one set per FP8 format.
  nlohmann::json coat_cuda = config("llama", "coat", "none", "e");
  coat_cuda["train"]["device"] = "cuda";
  size_t tables = 0;
  for (const auto& line : memory_plan(parse_train_config(coat_cuda, "plan.json")).lines) {
    if (line.what.rfind("FP8 range expansion tables", 0) == 0) tables = line.bytes;
  }
  EXPECT_GT(tables, 0u);
  EXPECT_EQ(tables % (128 * 128 * 12), 0u);
  for (const auto& line : cuda_plan.lines) EXPECT_NE(line.what.rfind("FP8 range expansion tables", 0), 0u);
  // Every CUDA allocation is a multiple of 512 bytes.
  for (const auto& line : cuda_plan.lines) EXPECT_EQ(line.bytes % 512, 0u) << line.what;
}

TEST_F(MemoryPlanTest, RecomputeKeyIsStrict) {
  nlohmann::json c = config("llama", "fp32", "block", "e");
  test::expect_error_containing([&] { parse_train_config(c, "plan.json"); },
                                "'train.recompute' = \"block\" is not valid");
  c["train"]["recompute"] = "blocks";
  EXPECT_EQ(parse_train_config(c, "plan.json").resolved.at("train").at("recompute"), "blocks");
  c["train"]["recompute"] = "qkv";
  EXPECT_EQ(parse_train_config(c, "plan.json").resolved.at("train").at("recompute"), "qkv");
  // fp8_block keeps the q/k/v input grouped along the tokens: q, k and v cannot be made again from it, unless
  // every block is in BF16.
  nlohmann::json block = config("llama", "fp8_block", "qkv", "e");
  test::expect_error_containing([&] { parse_train_config(block, "plan.json"); },
                                "'train.recompute' = qkv makes q, k and v again from the input the q/k/v "
                                "projection keeps, but 'precision.recipe' = fp8_block keeps it (block 0)");
  block["precision"]["bf16_layers"] = {0, 1, 2, 3};
  EXPECT_EQ(parse_train_config(block, "plan.json").train.recompute, models::Recompute::Qkv);
}

// Under train.recompute = qkv a coat block of Llama-2-7B's shape keeps no q, k and v: 8192 tokens x (3 x 4096)
// BF16 values less, which takes its saved bytes past 1.6x below bf16's; the plan's words say so.
TEST_F(MemoryPlanTest, QkvRecomputeDropsQKAndVFromEachBlock) {
  const auto saved = [&](const std::string& recipe, const std::string& recompute) {
    TrainConfig c = load_train_config(std::string(COAT_SOURCE_DIR) + "/configs/llama2_7b_1gpu.json", {});
    c.precision.recipe = models::parse_recipe_kind(recipe);
    c.train.micro_batch_size = c.train.global_batch_size = 4;
    c.train.recompute = recompute == "qkv" ? models::Recompute::Qkv : models::Recompute::None;
    return memory_plan(c);
  };
  const models::MemoryPlan kept = saved("coat", "none"), remade = saved("coat", "qkv"), bf16 = saved("bf16", "none");
  const size_t qkv_bytes = size_t{32} * 8192 * 3 * 4096 * 2;
  EXPECT_EQ(kept.saved_bytes - remade.saved_bytes, qkv_bytes);
  EXPECT_GT(static_cast<double>(bf16.saved_bytes) / static_cast<double>(remade.saved_bytes), 1.6);
  EXPECT_LT(static_cast<double>(bf16.saved_bytes) / static_cast<double>(kept.saved_bytes), 1.6);
  EXPECT_NE(remade.str().find("q, k and v made again in the backward (train.recompute = qkv)"), std::string::npos)
      << remade.str();
}

}  // namespace
}  // namespace coat::train

namespace coat::train {
namespace {

// Sharded over N ranks, a rank holds about 1/N of the masters, gradients and AdamW states (slices on state
// groups, the last padded), plus the gathered unit in use; and the advice names how many GPUs fit.
TEST(ShardedMemoryPlan, SlicesDivideByTheRanksAndTheAdviceNamesTheGpusNeeded) {
  TrainConfig c = load_train_config(std::string(COAT_SOURCE_DIR) + "/configs/llama2_7b.json", {});
  const models::MemoryPlan one = memory_plan(c);
  c.dist.world_size = 8;
  c.train.global_batch_size = 8 * c.train.micro_batch_size;
  const models::MemoryPlan eight = memory_plan(c);
  // Each unit's slice rounds up to a state group (128 elements of 4 bytes) and each of its (at most 4 per
  // category: moment codes and group metadata, twice) allocations to the CUDA allocator's 2 MiB.
  const double units = static_cast<double>(models::unit_layouts(c.model).size());
  const double slack = units * (4.0 * (2 << 20) + 2.0 * 128 * 4);
  for (MemoryCategory cat : {MemoryCategory::MasterWeights, MemoryCategory::Gradients, MemoryCategory::OptimizerState}) {
    const double eighth = static_cast<double>(one.bytes(cat)) / 8.0;
    EXPECT_GT(static_cast<double>(eight.bytes(cat)), eighth - slack / 8.0) << memory_category_name(cat);
    EXPECT_LT(static_cast<double>(eight.bytes(cat)), eighth + slack) << memory_category_name(cat);
  }
  EXPECT_GT(eight.bytes(MemoryCategory::Communication), 0u);
  EXPECT_EQ(one.bytes(MemoryCategory::Communication), 0u);
  c.dist.world_size = 0;
  c.train.global_batch_size = one.total() > 0 ? c.train.micro_batch_size : 1;
  const std::string advice = describe_memory_plan(c, size_t{40} << 30);  // 40 GiB: one GPU is not enough
  EXPECT_NE(advice.find("mpirun -np "), std::string::npos) << advice;
}

}  // namespace
}  // namespace coat::train

namespace coat::train {
namespace {

// dist.fp8_all_gather under coat and fp8_block: a gathered block is its E4M3 codes (1 byte an element, the
// FP8 cache's W) instead of BF16 plus a W quantised from it, so the plan's gathered units and FP8 cache
// shrink; each dist.prefetch unit adds one gathered unit.
TEST(ShardedMemoryPlan, Fp8AllGatherAndPrefetchAreCounted) {
  for (const models::RecipeKind recipe : {models::RecipeKind::Coat, models::RecipeKind::FP8Block}) {
    TrainConfig c = load_train_config(std::string(COAT_SOURCE_DIR) + "/configs/llama2_7b.json", {});
    ASSERT_EQ(c.precision.recipe, models::RecipeKind::Coat);
    c.precision.recipe = recipe;
    c.dist.world_size = 8;
    c.train.global_batch_size = 8 * c.train.micro_batch_size;
    c.dist.fp8_all_gather = false;
    const models::MemoryPlan bf16 = memory_plan(c);
    c.dist.fp8_all_gather = true;
    const models::MemoryPlan codes = memory_plan(c);
    const std::string name(models::to_string(recipe));
    EXPECT_LT(codes.bytes(MemoryCategory::Weights), bf16.bytes(MemoryCategory::Weights))
        << name << ": the cache holds W^T only";
    EXPECT_LT(codes.bytes(MemoryCategory::Communication), bf16.bytes(MemoryCategory::Communication)) << name;
    c.dist.prefetch = 2;
    const models::MemoryPlan ahead = memory_plan(c);
    EXPECT_GT(ahead.bytes(MemoryCategory::Communication), codes.bytes(MemoryCategory::Communication)) << name;
    // fp8_block's gather quantises a padded F32 copy of each matrix part: a line of its own, there only.
    const auto padded_line = [](const models::MemoryPlan& p) {
      for (const auto& line : p.lines)
        if (line.what.find("padded to whole 128-row blocks") != std::string::npos) return line.bytes;
      return size_t{0};
    };
    if (recipe == models::RecipeKind::FP8Block) {
      // Llama-2-7B over 8 ranks: a slice of a block unit (202M / 8 elements) is smaller than gate/up, so the
      // part is at most the slice plus 254 rows of 11008 columns, in F32.
      const double slice = 202383360.0 / 8.0;
      EXPECT_NEAR(static_cast<double>(padded_line(codes)), (slice + 254.0 * 11008.0) * 4.0, 4.0 * 1024 * 1024) << name;
    } else {
      EXPECT_EQ(padded_line(codes), 0u) << name;
    }
    EXPECT_EQ(padded_line(bf16), 0u) << name;
  }
}

}  // namespace
}  // namespace coat::train
