// coat-block-bench: one transformer block of a config, forward + backward, under several precision recipes
// in one process (so their ratios come from one run): time per pass (CUDA events through a device sync,
// median), model TFLOP/s of the block, the bytes the block keeps for its backward (the tape's saved
// activations, distinct storages counted once) and the peak memory above the weights.
//   coat-block-bench --config configs/bench_llama2_7b_4layers.json [--recipes bf16,fp8,coat] [--steps 10]
//                    [--warmup 3] [--kernels] [--top 25] [--set k=v ...] [--json out.json]
// The model is built with one block (the config's shape otherwise); x and the output gradient are random
// BF16 [micro_batch_size, seq_len, hidden]. A recipe written name:unfused runs with the fused producers off
// (Transformer::set_fused_producers): the same bytes, every quantisation pass on its own; name:attn8 with
// precision.compress_attention (attention's saved tensors as FP8 1x16 groups); name:qkv with train.recompute = qkv
// (q, k and v made again in the backward from the projection's saved input); any of them may follow a name. --kernels (CUDA,
// with CUPTI): after the timed passes of each recipe, 3 more under the kernel profiler; one table of the
// kernels' GPU time per pass, a column per recipe (what each fusion removed, side by side). --cuda-graph
// (CUDA): each recipe's pass is also captured once as a CUDA graph and timed as graph launches (what the
// launches and the gaps between kernels cost the eager pass).
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <variant>
#include <sstream>

#include <nlohmann/json.hpp>

#include "coat/autograd/tape.h"
#include "coat/core/error.h"
#include "coat/core/random_generator.h"
#include "coat/io/atomic_file.h"
#include "coat/models/transformer.h"
#include "coat/ops/creation.h"
#include "coat/ops/runtime.h"
#include "coat/train/bench_report.h"
#include "coat/train/train_config.h"
#include "kernel_profile.h"
#ifdef COAT_WITH_CUDA
#include "coat/backend/cuda/captured_graph.h"
#include "coat/backend/cuda/cuda_context.h"
#endif

namespace {

struct Result {
  std::string recipe;
  double ms = 0.0;
  size_t saved_bytes = 0;
  size_t peak_bytes = 0;
  std::map<std::string, double> kernel_ms;  ///< GPU time per pass by kernel display name (--kernels)
  double graph_ms = 0.0;                    ///< median pass as a CUDA graph launch (--cuda-graph), else 0
};

constexpr int kProfiledPasses = 3;

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

/// A --recipes entry: a recipe name followed by modifiers (:unfused, :attn8, :qkv), as the header says.
struct RecipeSpec {
  std::string recipe;
  bool unfused = false;
  bool compress_attention = false;
  bool remake_qkv = false;
};

RecipeSpec parse_recipe_spec(const std::string& entry) {
  RecipeSpec spec;
  std::stringstream in(entry);
  std::getline(in, spec.recipe, ':');
  for (std::string modifier; std::getline(in, modifier, ':');) {
    if (modifier == "unfused") {
      spec.unfused = true;
    } else if (modifier == "attn8") {
      spec.compress_attention = true;
    } else if (modifier == "qkv") {
      spec.remake_qkv = true;
    } else {
      throw coat::InvalidArgument("--recipes: unknown modifier ':" + modifier + "' in '" + entry +
                                  "'; expected :unfused, :attn8 or :qkv");
    }
  }
  return spec;
}

/// Milliseconds of one call of `fn`, from an idle device to the end of its work (device syncs on both sides).
double synced_ms(const coat::ContextPtr& ctx, const std::function<void()>& fn) {
  ctx->synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  ctx->synchronize();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> times) {
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

/// Median milliseconds of `steps` launches (after `warmup`) of `pass` captured once as a CUDA graph, each
/// launch timed as the eager passes are (synced_ms).
double time_graph([[maybe_unused]] const std::function<void()>& pass, [[maybe_unused]] const coat::ContextPtr& ctx,
                  [[maybe_unused]] int warmup, [[maybe_unused]] int steps) {
#ifdef COAT_WITH_CUDA
  ctx->synchronize();
  coat::cuda::CapturedGraph graph(static_cast<coat::cuda::CudaContext&>(*ctx), pass);
  std::vector<double> times;
  for (int i = 0; i < warmup + steps; ++i) {
    const double ms = synced_ms(ctx, [&] { graph.launch(); });
    if (i >= warmup) times.push_back(ms);
  }
  return median(std::move(times));
#else
  return 0.0;
#endif
}

/// GPU time per pass of each kernel over `passes` runs of `pass` under CUPTI, by display name; empty (with the
/// reason on stderr) without the profiler.
std::map<std::string, double> profile_kernels(const std::function<void()>& pass, const coat::ContextPtr& ctx,
                                              int passes) {
  std::map<std::string, double> per_pass;
  auto table = coat::tools::profile_kernels(pass, ctx, passes);
  if (const auto* why = std::get_if<std::string>(&table)) {
    std::fprintf(stderr, "coat-block-bench: no kernel table: %s\n", why->c_str());
    return per_pass;
  }
  const coat::train::KernelTable& t = std::get<coat::train::KernelTable>(table);
  for (const coat::train::KernelTime& k : t.kernels)
    per_pass[coat::train::kernel_display_name(k.name, 60)] += k.total_ms / passes;
  if (t.dropped_records > 0)
    std::fprintf(stderr, "coat-block-bench: the profiler dropped %lld records; the times are too low\n",
                 static_cast<long long>(t.dropped_records));
  return per_pass;
}

/// The `top` kernels of any recipe (by GPU time per pass), a row each, a column per recipe, then the totals.
void print_kernel_table(const std::vector<Result>& results, size_t top) {
  std::set<std::string> names;
  for (const Result& r : results) {
    std::vector<std::pair<double, std::string>> by_time;
    for (const auto& [name, ms] : r.kernel_ms) by_time.emplace_back(-ms, name);
    std::sort(by_time.begin(), by_time.end());
    for (size_t i = 0; i < std::min(top, by_time.size()); ++i) names.insert(by_time[i].second);
  }
  if (names.empty()) return;
  std::vector<std::pair<double, std::string>> rows;  // by the largest time of any recipe
  for (const std::string& name : names) {
    double most = 0.0;
    for (const Result& r : results) most = std::max(most, r.kernel_ms.count(name) ? r.kernel_ms.at(name) : 0.0);
    rows.emplace_back(-most, name);
  }
  std::sort(rows.begin(), rows.end());
  std::printf("[kernels] GPU ms per pass (%d profiled passes each)\n%-62s", kProfiledPasses, "kernel");
  for (const Result& r : results) std::printf(" %14s", r.recipe.c_str());
  std::printf("\n");
  for (const auto& [neg, name] : rows) {
    std::printf("%-62s", name.c_str());
    for (const Result& r : results)
      std::printf(" %14.3f", r.kernel_ms.count(name) ? r.kernel_ms.at(name) : 0.0);
    std::printf("\n");
  }
  std::printf("%-62s", "all kernels");
  for (const Result& r : results) {
    double total = 0.0;
    for (const auto& [name, ms] : r.kernel_ms) total += ms;
    std::printf(" %14.3f", total);
  }
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"coat-block-bench: one block's forward + backward under several precision recipes"};
  std::string config_path, recipes = "bf16,fp8,coat", json_out;
  std::vector<std::string> overrides;
  int steps = 10, warmup = 3;
  bool kernels = false, cuda_graph = false;
  size_t top = 25;
  app.add_option("--config", config_path, "JSON config (its model shape, micro-batch and sequence length)")
      ->required();
  app.add_option("--set", overrides, "override: section.key=value (repeatable)");
  app.add_option("--recipes", recipes, "comma-separated precision recipes (bf16, fp8, fp8_block, coat)");
  app.add_option("--steps", steps, "timed passes")->check(CLI::Range(1, 100000));
  app.add_option("--warmup", warmup, "untimed passes first")->check(CLI::Range(0, 100000));
  app.add_option("--json", json_out, "write the results here");
  app.add_flag("--kernels", kernels, "CUDA: a table of the kernels' GPU time per pass, a column per recipe");
  app.add_flag("--cuda-graph", cuda_graph,
               "CUDA: also time each recipe's pass captured once as a CUDA graph (launch cost of the eager pass)");
  app.add_option("--top", top, "kernels of each recipe in the table")->check(CLI::Range(1, 100000));
  CLI11_PARSE(app, argc, argv);
  try {
    coat::train::TrainConfig config = coat::train::load_train_config(config_path, overrides);
    coat::models::ModelConfig shape = config.model;
    shape.num_hidden_layers = 1;
    const coat::Device device = config.train.compute_device();
    auto ctx = coat::ops::make_context(device);
    const int64_t batch = config.train.micro_batch_size, seq = config.data.seq_len, hidden = shape.hidden_size;
    const double tokens = static_cast<double>(batch * seq);
    // 6 N per token for the block's matrices, 12 L H S for attention (as coat-bench counts).
    const double block_params = static_cast<double>(shape.matmul_parameter_count() - shape.vocab_size * hidden);
    const double flops = tokens * (6.0 * block_params + 12.0 * static_cast<double>(hidden * seq));
    coat::models::Transformer model(shape, ctx, coat::DType::F32, /*with_grads=*/true, coat::DType::BF16);
    model.init(1);
    coat::RandomGenerator rng{2, 0};
    coat::Tensor x = coat::Tensor::empty(ctx, {batch, seq, hidden}, coat::DType::BF16);
    coat::Tensor dy = coat::Tensor::empty(ctx, {batch, seq, hidden}, coat::DType::BF16);
    coat::ops::normal_(x, rng, 0.0f, 1.0f);
    coat::ops::normal_(dy, rng, 0.0f, 1e-3f);
    std::printf("block of %s: hidden %lld, intermediate %lld, heads %lld/%lld, batch %lld x seq %lld on %s\n",
                config_path.c_str(), static_cast<long long>(hidden),
                static_cast<long long>(shape.intermediate_size), static_cast<long long>(shape.num_attention_heads),
                static_cast<long long>(shape.num_key_value_heads), static_cast<long long>(batch),
                static_cast<long long>(seq), device.str().c_str());
    std::vector<Result> results;
    for (const std::string& name : split(recipes)) {
      const RecipeSpec spec = parse_recipe_spec(name);
      coat::models::PrecisionRecipe recipe = coat::models::make_recipe(spec.recipe, {}, 1);
      recipe.compress_attention = spec.compress_attention;
      model.set_recompute(coat::models::Recompute::None);
      model.set_recipe(recipe);
      model.set_recompute(spec.remake_qkv ? coat::models::Recompute::Qkv : coat::models::Recompute::None);
      model.set_fused_producers(!spec.unfused);
      Result r;
      r.recipe = name;
      const auto pass = [&] {
        model.zero_grad(/*defer_linear=*/true);
        coat::autograd::Tape tape;
        coat::autograd::Var in = tape.leaf(x, /*requires_grad=*/true);
        coat::autograd::Var out = model.block(tape, 0, in, batch, seq);
        r.saved_bytes = tape.saved_bytes();
        tape.backward(out, dy);
      };
      std::vector<double> times;
      for (int i = 0; i < warmup + steps; ++i) {
        ctx->synchronize();
        const size_t base = ctx->allocator().memory_report().total_current_bytes;
        ctx->allocator().reset_peaks();
        const double ms = synced_ms(ctx, pass);
        if (i >= warmup) times.push_back(ms);
        r.peak_bytes = ctx->allocator().memory_report().total_peak_bytes - base;
      }
      r.ms = median(std::move(times));
      if (cuda_graph && device.is_cuda()) r.graph_ms = time_graph(pass, ctx, warmup, steps);
      if (kernels && device.is_cuda()) r.kernel_ms = profile_kernels(pass, ctx, kProfiledPasses);
      results.push_back(r);
    }
    const Result& base = results.front();
    nlohmann::json js = nlohmann::json::array();
    for (const Result& r : results) {
      std::printf(
          "[block] %-14s %8.2f ms  %6.1f TFLOP/s  speed x%.2f vs %s | saved activations %8.1f MiB (x%.2f smaller) | "
          "peak above weights %8.1f MiB\n",
          r.recipe.c_str(), r.ms, flops / (r.ms * 1e-3) / 1e12, base.ms / r.ms, base.recipe.c_str(),
          static_cast<double>(r.saved_bytes) / (1 << 20),
          static_cast<double>(base.saved_bytes) / static_cast<double>(r.saved_bytes),
          static_cast<double>(r.peak_bytes) / (1 << 20));
      if (r.graph_ms > 0.0)
        std::printf("[graph] %-14s %8.2f ms as one CUDA graph launch (eager x%.3f); speed x%.2f vs %s as a graph\n",
                    r.recipe.c_str(), r.graph_ms, r.ms / r.graph_ms,
                    base.graph_ms > 0.0 ? base.graph_ms / r.graph_ms : 0.0, base.recipe.c_str());
      js.push_back({{"recipe", r.recipe},
                    {"ms", r.ms},
                    {"tflops", flops / (r.ms * 1e-3) / 1e12},
                    {"saved_bytes", r.saved_bytes},
                    {"peak_bytes_above_weights", r.peak_bytes},
                    {"kernel_ms_per_pass", r.kernel_ms},
                    {"graph_ms", r.graph_ms}});
    }
    if (kernels && !device.is_cuda()) std::printf("[kernels] none: the block ran on %s\n", device.str().c_str());
    if (kernels) print_kernel_table(results, top);
    if (!json_out.empty()) coat::io::write_string_atomically(json_out, js.dump(2) + "\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "coat-block-bench: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
