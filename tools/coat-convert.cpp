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
#include "coat/io/safetensors.h"
#include "coat/ops/copy.h"
#include "coat/ops/runtime.h"
#include "coat/train/model_loader.h"

namespace fs = std::filesystem;

namespace {

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw coat::IoError(coat::detail::concat("cannot open '", path.string(), "'"));
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    throw coat::IoError(coat::detail::concat("'", path.string(), "' is not valid JSON: ", e.what()));
  }
}

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
  const coat::models::ModelConfig config = coat::models::ModelConfig::from_hf_json(read_json(hf_dir / "config.json"));
  coat::ContextPtr ctx = coat::ops::make_context(coat::Device::cpu());
  coat::models::Transformer model(config, ctx, coat::DType::F32, /*with_grads=*/false);
  // Which file holds which tensor.
  std::map<std::string, fs::path> where;
  std::map<fs::path, coat::io::SafetensorsReader> readers;
  if (fs::exists(hf_dir / "model.safetensors")) {
    readers[hf_dir / "model.safetensors"] = coat::io::SafetensorsReader::open(hf_dir / "model.safetensors");
    for (const auto& e : readers.begin()->second.entries()) where[e.name] = hf_dir / "model.safetensors";
  } else if (fs::exists(hf_dir / "model.safetensors.index.json")) {
    const nlohmann::json index = read_json(hf_dir / "model.safetensors.index.json");
    for (const auto& [name, file] : index.at("weight_map").items()) where[name] = hf_dir / file.get<std::string>();
  } else {
    throw coat::IoError(coat::detail::concat("'", hf_dir.string(), "' has neither model.safetensors nor model.safetensors.index.json"));
  }
  std::set<std::string> used;
  for (coat::nn::Parameter& p : model.parameters()) {
    auto it = where.find(p.name);
    if (it == where.end()) {
      throw coat::IoError(coat::detail::concat("'", hf_dir.string(), "' has no tensor '", p.name, "' that a ",
                                               config.architecture_name(), " model of this config needs"));
    }
    auto reader = readers.find(it->second);
    if (reader == readers.end()) reader = readers.emplace(it->second, coat::io::SafetensorsReader::open(it->second)).first;
    const coat::Tensor t = reader->second.read(p.name, ctx);
    if (t.shape() != p.master.shape()) {
      throw coat::IoError(coat::detail::concat("'", it->second.string(), "': tensor '", p.name, "' has shape ",
                                               coat::shape_str(t.shape()), " but the config implies ",
                                               coat::shape_str(p.master.shape())));
    }
    coat::ops::copy_(p.master, t);  // any float dtype -> F32 (exact for BF16/F16)
    used.insert(p.name);
  }
  for (const auto& [name, file] : where) {
    const bool known_extra = name.find("rotary_emb.inv_freq") != std::string::npos ||
                             (name == "lm_head.weight" && config.tie_word_embeddings);
    if (!used.count(name) && !known_extra) {
      std::fprintf(stderr, "coat-convert: warning: ignoring tensor '%s' of %s\n", name.c_str(), file.string().c_str());
    }
  }
  nlohmann::json meta;
  meta["config"] = {{"model", config.to_json()}};
  meta["weights_only"] = true;
  meta["source"] = hf_dir.string();
  std::vector<std::pair<std::string, coat::Tensor>> tensors;
  for (const coat::nn::Parameter& p : model.parameters()) tensors.emplace_back(p.name, p.master);
  const fs::path dir = coat::io::save_checkpoint(output, 0, meta, tensors, 0);
  std::printf("imported %s (%s, %lld parameters) into %s\nstart a run from it with --set train.init_from=%s\n",
              hf_dir.string().c_str(), config.architecture_name().c_str(),
              static_cast<long long>(config.parameter_count()), dir.string().c_str(), output.string().c_str());
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
