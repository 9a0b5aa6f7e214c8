// coat-train: trains a Llama- or OLMo-family model from a JSON config; under mpirun, sharded over the ranks.
//   [mpirun -np N] coat-train --config configs/tiny.json [--set section.key=value ...] [--resume auto|DIR]
//              [--dry-run] [--device cpu|cuda] [--device-memory GIB]
// SIGINT, SIGTERM or SIGUSR2 (under mpirun: send SIGUSR2 to mpirun, which forwards it to every rank): finish the
// step, save a checkpoint, exit with status 75 (kExitStopped); a second one stops at once. SIGUSR1: save a
// checkpoint after the step and go on.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>

#include "coat/core/host_memory.h"
#include "coat/dist/communicator.h"
#include "coat/dist/process_group.h"
#include "coat/models/memory_plan.h"
#include "coat/ops/runtime.h"
#include "coat/train/memory_advice.h"
#include "coat/train/resume.h"
#include "coat/train/startup_clock.h"
#include "coat/train/trainer.h"

namespace {

std::string with_commas(int64_t v) {
  const std::string digits = std::to_string(v);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0 && digits[i - 1] != '-') out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

void dry_run(const coat::train::TrainConfig& c, double device_memory_gib) {
  std::printf("resolved config:\n%s\n", c.resolved.dump(2).c_str());
  const auto& m = c.model;
  std::printf("model: %s, %s parameters (%s in matrix products)\n", m.architecture_name().c_str(),
              with_commas(m.parameter_count()).c_str(), with_commas(m.matmul_parameter_count()).c_str());
  std::printf("training FLOPs per token: %.4g (6N + 12*L*H*S at seq %lld)\n", m.training_flops_per_token(c.data.seq_len),
              static_cast<long long>(c.data.seq_len));
  std::printf("tokens per optimizer step: %lld (%lld micro-batches of %lld x %lld)\n",
              static_cast<long long>(c.tokens_per_step()), static_cast<long long>(c.accumulation_steps()),
              static_cast<long long>(c.train.micro_batch_size), static_cast<long long>(c.data.seq_len));
  // The plan of the configured device, micro-batch, recipe and recomputation, compared with the device's
  // memory: queried on CUDA (or given with --device-memory), not compared on the CPU.
  size_t device_bytes = 0;
  if (device_memory_gib > 0) {
    device_bytes = static_cast<size_t>(device_memory_gib * 1024.0 * 1024.0 * 1024.0);
  } else if (c.train.device == coat::DeviceKind::CUDA) {
    device_bytes = coat::ops::cuda_device_memory_bytes(0);
    if (device_bytes == 0) {
      std::printf("(no CUDA device visible here: the plan is not compared with a GPU's memory; pass --device-memory GIB)\n");
    }
  }
  // The snapshot copy is checked against this machine's available host memory at the start of a run too.
  std::printf("%s", coat::train::describe_memory_plan(c, device_bytes, coat::available_host_bytes()).c_str());
  // The other train.recompute settings (qkv only where no q/k/v projection is 128-block scaled).
  using coat::models::Recompute;
  const bool block_scaled_qkv = coat::models::first_block_scaled_qkv(coat::train::recipe_of(c), m.num_hidden_layers) >= 0;
  for (Recompute rc : {Recompute::None, Recompute::Qkv, Recompute::Blocks}) {
    if (rc == c.train.recompute || (rc == Recompute::Qkv && block_scaled_qkv)) continue;
    coat::train::TrainConfig other = c;
    other.train.recompute = rc;
    const coat::models::MemoryPlan alternative = coat::train::memory_plan(other);
    std::printf("with train.recompute = %s instead: total %s (activations %s)\n",
                std::string(coat::models::to_string(rc)).c_str(),
                coat::models::format_bytes(static_cast<double>(alternative.total())).c_str(),
                coat::models::format_bytes(static_cast<double>(alternative.bytes(coat::MemoryCategory::Activations))).c_str());
  }
}

/// This rank's device: CPU, or the node's GPU of its local rank (ranks share GPUs round-robin when a node runs
/// more ranks than it has GPUs; the communicator then stages through host memory, as NCCL refuses that).
coat::Device rank_device(bool cuda, const coat::dist::ProcessGroup& world) {
  if (!cuda) return coat::Device::cpu();
  const int gpus = coat::ops::cuda_device_count();
  if (gpus <= 0) throw coat::Error("train.device is cuda but no CUDA device is visible to this process");
  return coat::Device::cuda(world.local_rank() % gpus);
}

/// Trains; returns the exit status: 0, or kExitStopped after a graceful stop (SIGINT, SIGTERM).
int train(const coat::train::TrainConfig& config, const std::string& config_path, const std::string& resume,
          const coat::dist::ProcessGroup& world, coat::train::StartupClock& clock) {
  const coat::Device dev = rank_device(config.train.device == coat::DeviceKind::CUDA, world);
  coat::ContextPtr ctx = coat::ops::make_context(dev);
  clock.mark(dev.is_cpu() ? "CPU context" : "CUDA context");
  // The world's communicator and, under hybrid sharding (dist.shard_size below the world), those of this rank's
  // shard group and replica group.
  std::unique_ptr<coat::dist::Communicator> comm, shard_comm, replicate_comm;
  std::optional<coat::dist::ProcessGroup::HybridGroups> groups;
  if (world.world_size() > 1) {
    const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(config.dist.timeout_s * 1000.0));
    const auto make = [&](const coat::dist::ProcessGroup& g) {
      return coat::dist::make_communicator(g, dev, coat::dist::CommunicatorKind::Auto, timeout);
    };
    comm = make(world);
    const int64_t shard_size = config.dist.shard_size;
    if (shard_size > 0 && shard_size < world.world_size()) {
      groups.emplace(world.split(static_cast<int>(shard_size)));
      shard_comm = make(groups->shard);
      replicate_comm = make(groups->replicate);
    }
  }
  if (comm) clock.mark("communicators");
  coat::train::Trainer trainer(config, ctx, /*resuming=*/!resume.empty(),
                               coat::train::TrainerComms(comm.get(), shard_comm.get(), replicate_comm.get()));
  clock.mark("model, optimizer and data");
  // SIGINT/SIGTERM/SIGUSR2 finish the step and save; SIGUSR1 saves and goes on (from here: earlier, nothing is lost).
  coat::train::SignalInterrupts interrupts;
  trainer.set_interrupts(&interrupts);
  // No other run may write the checkpoints a resume reads: lock an existing run directory before reading (and
  // before a damaged checkpoint is set aside or a crash's leftovers are removed). The trainer has written
  // nothing yet: the run directory is written from run() on.
  trainer.lock_run_dir();
  const std::optional<coat::io::CheckpointReader> from =
      coat::train::open_resume_checkpoint(resume, config, comm.get(), ctx);
  if (from) {
    clock.mark("resume: choose and verify");  // every rank file's bytes checksummed against COMPLETE
    trainer.load_checkpoint(*from);
    clock.mark("resume: load");
  }
  trainer.set_startup_clock(&clock);
  spdlog::info("{}: {} model, {} parameters, {} tokens/step, {} rank{} on {}{}", config_path,
               config.model.architecture_name(), with_commas(config.model.parameter_count()), config.tokens_per_step(),
               world.world_size(), world.world_size() > 1 ? "s" : "", dev.str(),
               comm ? " (communicator: " + std::string(coat::dist::communicator_kind_name(comm->kind())) + ")" : "");
  if (trainer.run() == coat::train::RunEnd::Stopped) {
    if (world.rank() == 0) {
      const std::string reason(interrupts.stop_reason());
      std::printf("stopped after step %lld (%s) with a checkpoint of it; run directory: %s; continue with "
                  "--resume auto\n",
                  static_cast<long long>(trainer.step()), reason.empty() ? "asked by another rank" : reason.c_str(),
                  trainer.run_dir().string().c_str());
    }
    return coat::train::kExitStopped;
  }
  const coat::train::EvalResult e = trainer.evaluate();
  if (world.rank() != 0) return 0;
  std::printf("final validation loss %.4f (perplexity %.2f); unigram entropy of the validation tokens %.4f nats; ratio %.3f\n",
              e.loss, e.perplexity, trainer.validation_unigram_entropy(), e.loss / trainer.validation_unigram_entropy());
  std::printf("run directory: %s\n", trainer.run_dir().string().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  coat::train::StartupClock clock;
  CLI::App app{"coat-train: FP8 training of Llama and OLMo models"};
  std::string config_path, resume, device;
  std::vector<std::string> overrides;
  bool dry = false;
  app.add_option("--config", config_path, "JSON config file")->required();
  app.add_option("--set", overrides, "override: section.key=value (repeatable)");
  app.add_option("--resume", resume, "resume: 'auto' (the newest complete checkpoint of the run that verifies; damaged ones are renamed step_N.corrupt) or a checkpoint directory (not older than the newest)");
  app.add_flag("--dry-run", dry, "print the resolved config, parameter count, FLOPs per token and memory plan; allocate nothing");
  app.add_option("--device", device, "cpu or cuda (overrides train.device)")->check(CLI::IsMember({"cpu", "cuda"}));
  double device_memory_gib = 0.0;
  app.add_option("--device-memory", device_memory_gib,
                 "with --dry-run: compare the memory plan with this much device memory (GiB) instead of the device's own")
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  // Under mpirun every rank runs this; without it (or with -np 1) the world is this process and MPI stays off.
  coat::dist::ProcessGroup world = coat::dist::ProcessGroup::from_environment();
  if (world.world_size() > 1) clock.mark("MPI");
  coat::dist::set_rank_log_prefix(world);
  if (world.rank() != 0) spdlog::set_level(spdlog::level::warn);  // rank 0 reports; the others warn and fail
  try {
    if (!device.empty()) overrides.push_back("train.device=\"" + device + "\"");
    // A run takes its world from mpirun; a dry run plans for dist.world_size (or mpirun's world when set).
    coat::train::TrainConfig config = coat::train::load_train_config(
        config_path, overrides, dry && world.world_size() == 1 ? 0 : world.world_size());
    if (dry) {
      if (world.rank() == 0) dry_run(config, device_memory_gib);
      return 0;
    }
    clock.mark("config");
    return train(config, config_path, resume, world, clock);
  } catch (const std::exception& e) {
    const std::string rank = world.world_size() > 1 ? "[rank " + std::to_string(world.rank()) + "] " : "";
    std::fprintf(stderr, "%scoat-train: error: %s\n", rank.c_str(), e.what());
    // Every other rank would wait in its next collective for this one: end the whole job.
    if (world.world_size() > 1) world.abort(1);
    return 1;
  }
}
