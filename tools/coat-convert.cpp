// coat-convert: moves models between coat-train and HF transformers.
//   coat-convert export --checkpoint runs/tiny --output hf/tiny [--dtype f32|bf16] [--max-shard-size 5GB]
//                       [--force]
//       writes config.json (LlamaForCausalLM / OlmoForCausalLM), generation_config.json and model.safetensors
//       with HF's names (sharded with model.safetensors.index.json above the shard size), from a checkpoint
//       written by any number of ranks, into a staged directory renamed into place (io/hf_export.h)
//   coat-convert import --hf hf/model --output runs/imported
//       reads config.json and model.safetensors (or the sharded model.safetensors.index.json) and writes a
//       native checkpoint at step 0; start a run from it with train.init_from=runs/imported
#include <CLI/CLI.hpp>

#include <cstdio>
#include <fstream>
#include <map>
#include <set>

#include "coat/io/atomic_file.h"
#include "coat/io/checkpoint.h"
#include "coat/io/hf_export.h"
#include "coat/io/hf_import.h"
#include "coat/io/safetensors.h"
#include "coat/ops/copy.h"
#include "coat/ops/runtime.h"
#include "coat/train/model_loader.h"

namespace fs = std::filesystem;

namespace {

void export_model(const std::string& checkpoint, const fs::path& output, const std::string& dtype,
                  const std::string& max_shard_size, bool force) {
  coat::io::HfExportOptions options;
  options.dtype = dtype == "bf16" ? coat::DType::BF16 : coat::DType::F32;
  options.max_shard_bytes = coat::io::parse_shard_size(max_shard_size);
  options.force = force;
  const coat::io::HfExportResult r =
      coat::io::export_hf_model(coat::train::resolve_checkpoint_dir(checkpoint), output, options);
  std::printf("exported %s (step %lld, written by %d rank%s) to %s: %zu tensors, %s, %.1f MB in %zu file%s; "
              "bos/eos ids from %s\n",
              r.checkpoint.string().c_str(), static_cast<long long>(r.step), r.checkpoint_ranks,
              r.checkpoint_ranks == 1 ? "" : "s", r.output.string().c_str(), r.tensor_count, dtype.c_str(),
              static_cast<double>(r.total_bytes) / 1e6, r.file_count, r.file_count == 1 ? "" : "s",
              r.special_tokens_source.c_str());
}

void import_model(const fs::path& hf_dir, const fs::path& output) {
  const coat::io::HfImport imported = coat::io::import_hf(hf_dir, output);
  std::printf(
      "imported %s (%s, %lld parameters) into %s\nstart a run from it with --set train.init_from=%s\n",
      hf_dir.string().c_str(), imported.config.architecture_name().c_str(),
      static_cast<long long>(imported.config.parameter_count()), imported.checkpoint.string().c_str(),
      output.string().c_str());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"coat-convert: export coat-train checkpoints to HF format and import HF models"};
  app.require_subcommand(1);
  std::string checkpoint, output, dtype = "f32", max_shard_size = "5GB", hf_dir, import_output;
  bool force = false;
  CLI::App* exp = app.add_subcommand("export", "checkpoint -> HF config.json + model.safetensors");
  exp->add_option("--checkpoint", checkpoint, "checkpoint or run directory")->required();
  exp->add_option("--output", output, "output directory")->required();
  exp->add_option("--dtype", dtype, "f32 or bf16")->check(CLI::IsMember({"f32", "bf16"}));
  exp->add_option("--max-shard-size", max_shard_size,
                  "above it, sharded files and an index (5GB, 500MB, 2GiB)");
  exp->add_flag("--force", force, "replace a non-empty output directory (an earlier export)");
  CLI::App* imp = app.add_subcommand("import", "HF directory -> native checkpoint (step 0, weights only)");
  imp->add_option("--hf", hf_dir, "directory with config.json and model.safetensors")->required();
  imp->add_option("--output", import_output, "run directory to write the checkpoint into")->required();
  CLI11_PARSE(app, argc, argv);
  try {
    if (exp->parsed()) export_model(checkpoint, output, dtype, max_shard_size, force);
    if (imp->parsed()) import_model(hf_dir, import_output);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "coat-convert: error: %s\n", e.what());
    return 1;
  }
}
