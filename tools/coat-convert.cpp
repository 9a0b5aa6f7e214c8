// coat-convert: moves models between coat-train and HF transformers.
//   coat-convert export --checkpoint runs/tiny --output hf/tiny [--dtype f32|bf16]
//       writes config.json (LlamaForCausalLM / OlmoForCausalLM) and model.safetensors with HF's names
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
#include "coat/io/hf_import.h"
#include "coat/io/safetensors.h"
#include "coat/ops/copy.h"
#include "coat/ops/runtime.h"
#include "coat/train/model_loader.h"

namespace fs = std::filesystem;

namespace {

void export_model(const std::string& checkpoint, const fs::path& output, const std::string& dtype) {
  coat::ContextPtr ctx = coat::ops::make_context(coat::Device::cpu());
  coat::train::LoadedModel loaded = coat::train::load_model(checkpoint, ctx);
  const coat::DType out_dtype = dtype == "bf16" ? coat::DType::BF16 : coat::DType::F32;
  std::vector<std::pair<std::string, coat::Tensor>> tensors;
  for (const coat::nn::Parameter& p : loaded.model->parameters()) {
    tensors.emplace_back(p.name, out_dtype == coat::DType::F32 ? p.master : coat::ops::cast(p.master, out_dtype));
  }
  fs::create_directories(output);
  nlohmann::json hf = loaded.model->config().to_hf_json();
  hf["torch_dtype"] = dtype == "bf16" ? "bfloat16" : "float32";
  coat::io::write_safetensors(output / "model.safetensors", tensors, {{"format", "pt"}});
  coat::io::write_string_atomically(output / "config.json", hf.dump(2) + "\n");
  std::printf("exported %s (step %lld) to %s: %zu tensors, %s\n", loaded.checkpoint.string().c_str(),
              static_cast<long long>(loaded.meta.value("step", 0)), output.string().c_str(), tensors.size(), dtype.c_str());
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
  std::string checkpoint, output, dtype = "f32", hf_dir, import_output;
  CLI::App* exp = app.add_subcommand("export", "checkpoint -> HF config.json + model.safetensors");
  exp->add_option("--checkpoint", checkpoint, "checkpoint or run directory")->required();
  exp->add_option("--output", output, "output directory")->required();
  exp->add_option("--dtype", dtype, "f32 or bf16")->check(CLI::IsMember({"f32", "bf16"}));
  CLI::App* imp = app.add_subcommand("import", "HF directory -> native checkpoint (step 0, weights only)");
  imp->add_option("--hf", hf_dir, "directory with config.json and model.safetensors")->required();
  imp->add_option("--output", import_output, "run directory to write the checkpoint into")->required();
  CLI11_PARSE(app, argc, argv);
  try {
    if (exp->parsed()) export_model(checkpoint, output, dtype);
    if (imp->parsed()) import_model(hf_dir, import_output);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "coat-convert: error: %s\n", e.what());
    return 1;
  }
}
