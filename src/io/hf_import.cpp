// HF model directories into coat-train: the config, the weights and their checks, the step-0 checkpoint.
#include "coat/io/hf_import.h"

#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "coat/io/checkpoint.h"
#include "coat/io/safetensors.h"
#include "coat/ops/copy.h"
#include "coat/ops/runtime.h"

namespace coat::io {
namespace fs = std::filesystem;
namespace {

nlohmann::json read_json_file(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw IoError(detail::concat("cannot open '", path.string(), "'"));
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    throw IoError(detail::concat("'", path.string(), "' is not valid JSON: ", e.what()));
  }
}

/// Which file holds which tensor: the single model.safetensors, else the index's weight_map.
std::map<std::string, fs::path> tensor_files(const fs::path& hf_dir) {
  std::map<std::string, fs::path> where;
  const fs::path single = hf_dir / "model.safetensors", index_path = hf_dir / "model.safetensors.index.json";
  if (fs::exists(single)) {
    const SafetensorsReader reader = SafetensorsReader::open(single);
    for (const SafetensorsEntry& e : reader.entries()) where[e.name] = single;
    return where;
  }
  if (!fs::exists(index_path)) {
    throw IoError(detail::concat("'", hf_dir.string(),
                                 "' has neither model.safetensors nor model.safetensors.index.json"));
  }
  const nlohmann::json index = read_json_file(index_path);
  if (!index.is_object() || !index.contains("weight_map") || !index.at("weight_map").is_object()) {
    throw IoError(
        detail::concat("'", index_path.string(), "': expected an object with a 'weight_map' object"));
  }
  for (const auto& [name, file] : index.at("weight_map").items()) {
    if (!file.is_string()) {
      throw IoError(detail::concat("'", index_path.string(), "': weight_map['", name,
                                   "'] must be a file name, got ", file.dump()));
    }
    where[name] = hf_dir / file.get<std::string>();
  }
  return where;
}

/// Tensors transformers itself ignores when it loads the model.
bool ignored_by_transformers(const std::string& name, const models::ModelConfig& config) {
  return name.ends_with("rotary_emb.inv_freq") || (name == "lm_head.weight" && config.tie_word_embeddings);
}

/// IoError naming every tensor of the files that the model does not use (before anything is read).
void refuse_unused_tensors(const std::map<std::string, fs::path>& where, const models::Transformer& model) {
  std::map<std::string, bool> used;
  for (const nn::Parameter& p : model.parameters()) used[p.name] = true;
  std::string list;
  size_t count = 0;
  for (const auto& [name, file] : where) {
    if (used.count(name) || ignored_by_transformers(name, model.config())) continue;
    if (++count <= 8) list += detail::concat(count > 1 ? ", " : "", "'", name, "' in '", file.string(), "'");
  }
  if (count == 0) return;
  throw IoError(
      detail::concat(count, " tensor(s) that a ", model.config().architecture_name(),
                     " model of this config does not use: ", list, count > 8 ? ", ..." : "",
                     ". coat-train would drop them and compute other numbers than transformers (is it "
                     "another architecture, or one with biases?)"));
}

bool is_float(DType dtype) {
  return dtype == DType::F32 || dtype == DType::BF16 || dtype == DType::F16 || dtype == DType::F64;
}

}  // namespace

models::ModelConfig read_hf_config(const fs::path& hf_dir) {
  const fs::path path = hf_dir / "config.json";
  try {
    return models::ModelConfig::from_hf_json(read_json_file(path));
  } catch (const ConfigError& e) {
    throw ConfigError(detail::concat("'", path.string(), "': ", e.what()));
  }
}

void load_hf_weights(const fs::path& hf_dir, models::Transformer& model) {
  const std::map<std::string, fs::path> where = tensor_files(hf_dir);
  refuse_unused_tensors(where, model);
  std::map<fs::path, SafetensorsReader> readers;
  for (nn::Parameter& p : model.parameters()) {
    const auto it = where.find(p.name);
    if (it == where.end()) {
      throw IoError(detail::concat("'", hf_dir.string(), "' has no tensor '", p.name, "' that a ",
                                   model.config().architecture_name(), " model of this config needs"));
    }
    auto reader = readers.find(it->second);
    if (reader == readers.end())
      reader = readers.emplace(it->second, SafetensorsReader::open(it->second)).first;
    const SafetensorsEntry& entry = reader->second.entry(p.name);
    if (!entry.dtype || !is_float(*entry.dtype)) {
      throw IoError(detail::concat("'", it->second.string(), "': tensor '", p.name, "' has dtype ",
                                   entry.dtype_string, "; expected F32, BF16, F16 or F64"));
    }
    if (entry.shape != p.master.shape()) {
      throw IoError(detail::concat("'", it->second.string(), "': tensor '", p.name, "' has shape ",
                                   shape_str(entry.shape), " but the config implies ",
                                   shape_str(p.master.shape())));
    }
    ops::copy_(p.master, reader->second.read(p.name, model.context()));  // exact for BF16/F16 into F32
  }
  model.sync_compute_weights();
}

HfImport import_hf(const fs::path& hf_dir, const fs::path& output) {
  HfImport imported{read_hf_config(hf_dir), {}};
  ContextPtr ctx = ops::make_context(Device::cpu());
  models::Transformer model(imported.config, ctx, DType::F32, /*with_grads=*/false);
  load_hf_weights(hf_dir, model);
  nlohmann::json meta;
  meta["config"] = {{"model", imported.config.to_json()}};
  meta["weights_only"] = true;
  meta["source"] = hf_dir.string();
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const nn::Parameter& p : model.parameters()) tensors.emplace_back(p.name, p.master);
  imported.checkpoint = save_checkpoint(output, 0, meta, tensors, 0);
  return imported;
}

}  // namespace coat::io
