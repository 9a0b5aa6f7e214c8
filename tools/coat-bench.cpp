// coat-bench: times training steps of a config on random tokens after warm-up and reports tokens/s, model
// TFLOP/s (6N + 12*L*H*S per token, as PaLM counts) and peak memory by category; writes the same as JSON.
//   coat-bench --config configs/bench_tinyllama.json [--set k=v ...] [--steps 10] [--warmup 3] [--json out.json]
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "coat/data/token_file.h"
#include "coat/models/memory_plan.h"
#include "coat/ops/runtime.h"
#include "coat/train/trainer.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  CLI::App app{"coat-bench: time training steps of a config on random tokens"};
  std::string config_path, json_out;
  std::vector<std::string> overrides;
  int steps = 10, warmup = 3;
  app.add_option("--config", config_path, "JSON config")->required();
  app.add_option("--set", overrides, "override: section.key=value (repeatable)");
  app.add_option("--steps", steps, "timed steps")->check(CLI::Range(1, 100000));
  app.add_option("--warmup", warmup, "untimed steps first")->check(CLI::Range(0, 100000));
  app.add_option("--json", json_out, "write the results here");
  CLI11_PARSE(app, argc, argv);
  const fs::path work = fs::temp_directory_path() / ("coat-bench-" + std::to_string(::getpid()));
  try {
    fs::create_directories(work);
    // A first read for the shapes, then random tokens enough for every step.
    coat::train::TrainConfig probe = coat::train::load_train_config(config_path, overrides);
    const int64_t total_steps = steps + warmup;
    const uint64_t tokens_needed =
        static_cast<uint64_t>(probe.tokens_per_step() * total_steps) * 11 / 10 + static_cast<uint64_t>(probe.data.seq_len) * 4;
    std::mt19937 rng(1);
    std::vector<uint32_t> tokens(tokens_needed);
    for (auto& t : tokens) t = static_cast<uint32_t>(rng() % static_cast<uint32_t>(probe.model.vocab_size));
    const auto width = probe.model.vocab_size <= 65536 ? coat::data::TokenWidth::U16 : coat::data::TokenWidth::U32;
    coat::data::write_token_file(work / "tokens.bin", tokens, width, static_cast<uint32_t>(probe.model.vocab_size));
    overrides.push_back("data.path=\"" + (work / "tokens.bin").string() + "\"");
    overrides.push_back("data.format=\"coat\"");
    overrides.push_back("data.validation_fraction=0.0");
    overrides.push_back("logging.run_dir=\"" + (work / "run").string() + "\"");
    overrides.push_back("logging.progress=\"off\"");
    overrides.push_back("train.max_steps=" + std::to_string(total_steps));
    overrides.push_back("optim.warmup_steps=0");
    coat::train::TrainConfig config = coat::train::load_train_config(config_path, overrides);

    const coat::Device dev = config.train.device == "cuda" ? coat::Device::cuda(0) : coat::Device::cpu();
    coat::ContextPtr ctx = coat::ops::make_context(dev);
    coat::train::Trainer trainer(config, ctx);
    std::vector<double> times;
    for (int s = 0; s < total_steps; ++s) {
      ctx->synchronize();
      const auto t0 = std::chrono::steady_clock::now();
      trainer.train_step();
      ctx->synchronize();
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (s >= warmup) times.push_back(dt);
    }
    std::vector<double> sorted = times;
    std::sort(sorted.begin(), sorted.end());
    const double median = sorted[sorted.size() / 2];
    const double tokens_per_s = static_cast<double>(config.tokens_per_step()) / median;
    const double flops = config.model.training_flops_per_token(config.data.seq_len);
    const coat::MemoryReport mem = ctx->allocator().memory_report();
    nlohmann::json out;
    out["config"] = config_path;
    out["device"] = dev.str();
    out["recipe"] = config.precision.recipe;
    out["parameters"] = config.model.parameter_count();
    out["tokens_per_step"] = config.tokens_per_step();
    out["step_time_median_s"] = median;
    out["step_times_s"] = times;
    out["tokens_per_s"] = tokens_per_s;
    out["model_tflops"] = tokens_per_s * flops / 1e12;
    out["final_loss"] = trainer.history().back().loss;
    nlohmann::json peaks;
    for (size_t c = 0; c < coat::kNumMemoryCategories; ++c) {
      const auto cat = static_cast<coat::MemoryCategory>(c);
      peaks[std::string(coat::memory_category_name(cat))] = mem.peak(cat);
    }
    out["peak_bytes_by_category"] = peaks;
    out["peak_bytes_total"] = mem.total_peak_bytes;
    out["peak_reserved_bytes"] = mem.peak_reserved_bytes;
    std::printf("%s on %s (%s): %.0f tokens/s, %.1f model TFLOP/s, step %.1f ms (median of %d), loss %.4f\n",
                config_path.c_str(), dev.str().c_str(), config.precision.recipe.c_str(), tokens_per_s,
                tokens_per_s * flops / 1e12, median * 1e3, steps, trainer.history().back().loss);
    std::printf("peak memory: %s allocated, %s reserved\n", coat::models::format_bytes(static_cast<double>(mem.total_peak_bytes)).c_str(),
                coat::models::format_bytes(static_cast<double>(mem.peak_reserved_bytes)).c_str());
    for (size_t c = 0; c < coat::kNumMemoryCategories; ++c) {
      const auto cat = static_cast<coat::MemoryCategory>(c);
      if (mem.peak(cat) == 0) continue;
      std::printf("  %-16s %12s\n", std::string(coat::memory_category_name(cat)).c_str(),
                  coat::models::format_bytes(static_cast<double>(mem.peak(cat))).c_str());
    }
    if (!json_out.empty()) {
      std::ofstream(json_out) << out.dump(2) << "\n";
    }
    fs::remove_all(work);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "coat-bench: error: %s\n", e.what());
    fs::remove_all(work);
    return 1;
  }
}
