// coat-bench: times training steps of a config on random tokens after warm-up and reports tokens/s, model
// TFLOP/s (6N + 12*L*H*S per token, as PaLM counts), the step split into forward, backward and optimizer,
// peak memory by category and, on CUDA, the kernels that take the GPU's time (CUPTI, measured in extra
// steps after the timed ones so that it does not change them); writes the same as JSON.
//   coat-bench --config configs/bench_tinyllama.json [--set k=v ...] [--device cpu|cuda] [--steps 10]
//              [--warmup 3] [--no-kernels] [--kernel-steps 3] [--top 15] [--json out.json]
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <variant>

#include "coat/data/token_file.h"
#include "coat/io/atomic_file.h"
#include "coat/ops/runtime.h"
#include "coat/train/bench_report.h"
#include "coat/train/trainer.h"

#include "kernel_profile.h"

namespace fs = std::filesystem;

namespace {

// Runs `steps` more steps with CUPTI's kernel activity on. The table, or why there is none, goes to the
// report.
void profile_kernels(coat::train::Trainer& trainer, const coat::ContextPtr& ctx, int64_t steps,
                     coat::train::BenchReport& report) {
  auto table = coat::tools::profile_kernels([&] { trainer.train_step(); }, ctx, steps);
  if (auto* t = std::get_if<coat::train::KernelTable>(&table)) {
    report.kernels = std::move(*t);
  } else {
    report.kernels_note = std::get<std::string>(table);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"coat-bench: time training steps of a config on random tokens"};
  std::string config_path, json_out, device;
  std::vector<std::string> overrides;
  int steps = 10, warmup = 3, kernel_steps = 3, top = 15;
  bool kernels = true;
  app.add_option("--config", config_path, "JSON config")->required();
  app.add_option("--set", overrides, "override: section.key=value (repeatable)");
  app.add_option("--device", device, "cpu or cuda (train.device)")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--steps", steps, "timed steps")->check(CLI::Range(1, 100000));
  app.add_option("--warmup", warmup, "untimed steps first")->check(CLI::Range(0, 100000));
  app.add_flag("--kernels,!--no-kernels", kernels,
               "CUDA: profile --kernel-steps more steps after the timed ones with CUPTI and print the top "
               "kernels (on by default)");
  app.add_option("--kernel-steps", kernel_steps, "steps profiled for the kernel table")
      ->check(CLI::Range(1, 100000));
  app.add_option("--top", top, "kernels in the table")->check(CLI::Range(1, 100000));
  app.add_option("--json", json_out, "write the results here");
  CLI11_PARSE(app, argc, argv);
  const fs::path work = fs::temp_directory_path() / ("coat-bench-" + std::to_string(::getpid()));
  try {
    fs::create_directories(work);
    if (!device.empty()) overrides.push_back("train.device=\"" + device + "\"");
    // A first read for the shapes, then random tokens enough for every step.
    coat::train::TrainConfig probe = coat::train::load_train_config(config_path, overrides);
    const bool profile = kernels && probe.train.device == coat::DeviceKind::CUDA;
    const int64_t total_steps = steps + warmup + (profile ? kernel_steps : 0);
    const uint64_t tokens_needed = static_cast<uint64_t>(probe.tokens_per_step() * total_steps) * 11 / 10 +
                                   static_cast<uint64_t>(probe.data.seq_len) * 4;
    std::mt19937 rng(1);
    std::vector<uint32_t> tokens(tokens_needed);
    for (auto& t : tokens) t = static_cast<uint32_t>(rng() % static_cast<uint32_t>(probe.model.vocab_size));
    const auto width =
        probe.model.vocab_size <= 65536 ? coat::data::TokenWidth::U16 : coat::data::TokenWidth::U32;
    coat::data::write_token_file(work / "tokens.bin", tokens, width,
                                 static_cast<uint32_t>(probe.model.vocab_size));
    overrides.push_back("data.path=\"" + (work / "tokens.bin").string() + "\"");
    overrides.push_back("data.format=\"coat\"");
    overrides.push_back("data.validation_fraction=0.0");
    overrides.push_back("logging.run_dir=\"" + (work / "run").string() + "\"");
    overrides.push_back("logging.progress=\"off\"");
    overrides.push_back("train.max_steps=" + std::to_string(total_steps));
    overrides.push_back("optim.warmup_steps=0");
    coat::train::TrainConfig config = coat::train::load_train_config(config_path, overrides);

    const coat::Device dev = config.train.compute_device();
    coat::ContextPtr ctx = coat::ops::make_context(dev);
    coat::train::Trainer trainer(config, ctx);
    coat::train::BenchReport report;
    report.config_path = config_path;
    report.device = dev.str();
    report.recipe = std::string(coat::models::to_string(config.precision.recipe));
    report.parameters = config.model.parameter_count();
    report.tokens_per_step = config.tokens_per_step();
    report.flops_per_token = config.model.training_flops_per_token(config.data.seq_len);
    // Tokens/s from steps without a profiler; the kernel table from extra steps after them.
    report.timings = coat::train::time_train_steps(trainer, ctx, warmup, steps);
    report.final_loss = trainer.history().back().loss;
    report.memory = ctx->allocator().memory_report();
    if (profile) profile_kernels(trainer, ctx, kernel_steps, report);
    std::fputs(coat::train::format_bench_report(report, static_cast<size_t>(top)).c_str(), stdout);
    if (!json_out.empty()) {
      coat::io::write_string_atomically(json_out, coat::train::bench_json(report, static_cast<size_t>(top)).dump(2) + "\n");
    }
    fs::remove_all(work);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "coat-bench: error: %s\n", e.what());
    fs::remove_all(work);
    return 1;
  }
}
