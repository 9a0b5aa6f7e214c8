// coat-bench's measurements and report: the phase split of timed CPU steps adds up to the step time, the
// JSON has its keys, the text its lines, and kernel names come out short.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>

#include "coat/data/token_file.h"
#include "coat/ops/runtime.h"
#include "coat/train/bench_report.h"
#include "coat/train/trainer.h"

namespace coat::train {
namespace {

namespace fs = std::filesystem;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class BenchStepsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("coat_bench_report_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::mt19937 rng(3);
    std::vector<uint32_t> tokens(20000);
    for (auto& t : tokens) t = rng() % 256;
    data::write_token_file(dir_ / "tokens.bin", tokens, data::TokenWidth::U16, 256);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // test_small, a little wider and longer so that the layers' work dominates a step.
  TrainConfig config() const {
    std::ifstream in(std::string(COAT_SOURCE_DIR) + "/configs/test_small.json");
    nlohmann::json c = nlohmann::json::parse(in);
    c["model"]["hidden_size"] = 128;
    c["model"]["intermediate_size"] = 256;
    c["model"]["vocab_size"] = 256;
    c["model"]["max_position_embeddings"] = 128;
    c["data"]["seq_len"] = 64;
    c["data"]["path"] = (dir_ / "tokens.bin").string();
    c["data"]["validation_fraction"] = 0.0;
    c["train"]["max_steps"] = 20;
    c["logging"]["run_dir"] = (dir_ / "run").string();
    c["logging"]["progress"] = "off";
    return parse_train_config(c, "bench.json");
  }
  fs::path dir_;
};

TEST_F(BenchStepsTest, PhaseSplitSumsToAboutTheStepTimeOnCpu) {
  ContextPtr ctx = ops::make_context(Device::cpu());
  const TrainConfig c = config();
  Trainer trainer(c, ctx);
  const StepTimings t = time_train_steps(trainer, ctx, /*warmup=*/1, /*steps=*/4);
  ASSERT_EQ(t.step_s.size(), 4u);
  EXPECT_FALSE(t.device_timed);
  EXPECT_EQ(trainer.step(), 5);
  // Forward and backward once per micro-batch, the optimizer once per step.
  const int64_t accum = c.accumulation_steps();
  EXPECT_EQ(t.phases.intervals[static_cast<size_t>(Phase::Forward)], 4 * accum);
  EXPECT_EQ(t.phases.intervals[static_cast<size_t>(Phase::Backward)], 4 * accum);
  EXPECT_EQ(t.phases.intervals[static_cast<size_t>(Phase::Optimizer)], 4);
  for (Phase p : {Phase::Forward, Phase::Backward, Phase::Optimizer})
    EXPECT_GT(t.phases[p], 0.0) << phase_name(p);
  // The phases lie inside the steps and cover most of them (the rest: batches, zeroing gradients; about
  // 5% here). A busy machine can stall a step outside the phases: the best of a few tries counts.
  double best = 0.0;
  StepTimings tried = t;
  for (int attempt = 0; attempt < 4 && best < 0.8; ++attempt) {
    if (attempt > 0) tried = time_train_steps(trainer, ctx, 0, 3);
    EXPECT_LE(tried.phases.sum_s(), tried.total_s());
    best = std::max(best, tried.phases.sum_s() / tried.total_s());
  }
  EXPECT_GE(best, 0.8) << "forward " << tried.phases[Phase::Forward] << " s, backward "
                       << tried.phases[Phase::Backward] << " s, optimizer " << tried.phases[Phase::Optimizer]
                       << " s of " << tried.total_s() << " s";
  // The timer is off again after the timed steps.
  EXPECT_NO_THROW(trainer.train_step());
}

TEST(PhaseTimer, WallClockOnCpu) {
  PhaseTimer timer(ops::make_context(Device::cpu()));
  EXPECT_FALSE(timer.device_timed());
  { const PhaseTimer::Scope scope(&timer, Phase::Backward); }
  timer.collect();
  EXPECT_EQ(timer.totals().intervals[static_cast<size_t>(Phase::Backward)], 1);
  EXPECT_EQ(timer.totals().intervals[static_cast<size_t>(Phase::Forward)], 0);
  EXPECT_THROW(timer.end(Phase::Optimizer), Error);  // never began
  timer.reset();
  EXPECT_EQ(timer.totals().sum_s(), 0.0);
  const PhaseTimer::Scope no_timer(nullptr, Phase::Forward);  // only the NVTX range
  EXPECT_STREQ(phase_name(Phase::Optimizer), "optimizer");
}

BenchReport sample_report() {
  BenchReport r;
  r.config_path = "configs/x.json";
  r.device = "cuda:0";
  r.recipe = "bf16";
  r.parameters = 1000;
  r.tokens_per_step = 4096;
  r.flops_per_token = 6000.0;
  r.timings.step_s = {0.12, 0.10, 0.11};
  r.timings.device_timed = true;
  r.timings.phases.seconds = {0.09, 0.19, 0.03};
  r.final_loss = 5.5;
  KernelTable k;
  k.steps = 2;
  k.steps_wall_s = 0.25;
  for (int i = 0; i < 20; ++i) k.kernels.push_back({"kernel_" + std::to_string(i), 10 + i, 1.0 + i});
  k.kernels.push_back({"_ZN4coat4cuda12_GLOBAL__N_110rms_kernelIfLi4EEEvPKT_PS3_i", 4, 100.0});
  r.kernels = k;
  return r;
}

TEST(BenchReport, JsonHasThePhasesAndTheKernelTable) {
  const BenchReport r = sample_report();
  const nlohmann::json j = bench_json(r, 5);
  for (const char* key : {"config", "device", "recipe", "parameters", "tokens_per_step", "step_time_median_s",
                          "step_times_s", "tokens_per_s", "model_tflops", "final_loss", "phases",
                          "peak_bytes_by_category", "peak_bytes_total", "peak_reserved_bytes", "kernels"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_DOUBLE_EQ(j["step_time_median_s"].get<double>(), 0.11);
  EXPECT_DOUBLE_EQ(j["tokens_per_s"].get<double>(), 4096 / 0.11);
  const nlohmann::json& p = j["phases"];
  EXPECT_EQ(p["timer"], "cuda_events");
  EXPECT_EQ(p["steps"], 3);
  EXPECT_DOUBLE_EQ(p["step_total_s"].get<double>(), 0.33);
  EXPECT_DOUBLE_EQ(p["forward_s"].get<double>(), 0.09);
  EXPECT_DOUBLE_EQ(p["backward_s"].get<double>(), 0.19);
  EXPECT_DOUBLE_EQ(p["optimizer_s"].get<double>(), 0.03);
  EXPECT_NEAR(p["other_s"].get<double>(), 0.02, 1e-12);
  const nlohmann::json& k = j["kernels"];
  EXPECT_EQ(k["steps"], 2);
  EXPECT_EQ(k["distinct"], 21);
  EXPECT_DOUBLE_EQ(k["total_ms"].get<double>(), 20.0 + 190.0 + 100.0);  // sum of 1..20 plus 100
  ASSERT_EQ(k["top"].size(), 5u);
  EXPECT_EQ(k["top"][0]["name"], "coat::cuda::rms_kernel<...>");
  EXPECT_EQ(k["top"][0]["calls"], 4);
  EXPECT_DOUBLE_EQ(k["top"][0]["share"].get<double>(), 100.0 / 310.0);
  EXPECT_EQ(k["top"][1]["name"], "kernel_19");
  EXPECT_FALSE(j.contains("kernels_note"));

  BenchReport cpu = r;
  cpu.kernels.reset();
  cpu.timings.device_timed = false;
  const nlohmann::json c = bench_json(cpu);
  EXPECT_FALSE(c.contains("kernels"));
  EXPECT_EQ(c["phases"]["timer"], "wall_clock");
}

TEST(BenchReport, TextHasTheSplitAndTheTopKernels) {
  BenchReport r = sample_report();
  const std::string text = format_bench_report(r, 3);
  EXPECT_TRUE(contains(text, "configs/x.json on cuda:0 (bf16):")) << text;
  EXPECT_TRUE(contains(text,
                       "step split over 3 steps (CUDA events), 330.0 ms in all: forward 90.0 ms (27.3%), "
                       "backward 190.0 ms (57.6%), optimizer 30.0 ms (9.1%), other 20.0 ms (6.1%)"))
      << text;
  EXPECT_TRUE(contains(text, "top 3 of 21 kernels over 2 profiled steps")) << text;
  EXPECT_TRUE(contains(text, "coat::cuda::rms_kernel<...>")) << text;
  EXPECT_TRUE(contains(text, "kernel_19")) << text;
  EXPECT_FALSE(contains(text, "kernel_17")) << text;  // fourth longest: not in a top 3
  r.kernels.reset();
  r.kernels_note = "not measured: no CUPTI";
  const std::string without = format_bench_report(r);
  EXPECT_FALSE(contains(without, "top "));
  EXPECT_TRUE(contains(without, "kernel table: not measured: no CUPTI")) << without;
}

TEST(KernelDisplayName, DemangledWithoutSignatureOrTemplateArguments) {
  EXPECT_EQ(kernel_display_name("_Z25coat_profiler_test_kernelPfi"), "coat_profiler_test_kernel");
  EXPECT_EQ(kernel_display_name("_ZN4coat4cuda12_GLOBAL__N_110rms_kernelIfLi4EEEvPKT_PS3_i"),
            "coat::cuda::rms_kernel<...>");
  EXPECT_EQ(kernel_display_name("_ZN4coat4cuda12apply_kernelIZNS0_4instEvEUlvE_EEvT_i"),
            "coat::cuda::apply_kernel<...>");
  // Not mangled C++ (cuBLAS, cuDNN): as it is, cut to the limit.
  const std::string cublas =
      "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_"
      "kernel__5x_cublas";
  EXPECT_EQ(kernel_display_name(cublas, 200), cublas);
  const std::string cut = kernel_display_name(cublas, 40);
  EXPECT_EQ(cut.size(), 40u);
  EXPECT_EQ(cut, cublas.substr(0, 37) + "...");
  EXPECT_EQ(kernel_display_name("_Znot_a_valid_mangling"), "_Znot_a_valid_mangling");
}

}  // namespace
}  // namespace coat::train
