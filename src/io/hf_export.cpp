// HF export: the shard plan, the files save_pretrained writes (JSON with sorted keys and two-space indents,
// a trailing newline), and the tensor-by-tensor stream from the checkpoint reader into the shards.
#include "coat/io/hf_export.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "coat/core/config_reader.h"
#include "coat/core/error.h"
#include "coat/data/hf_tokenizer.h"
#include "coat/data/tokenizer.h"
#include "coat/io/atomic_file.h"
#include "coat/io/checkpoint_reader.h"
#include "coat/io/staged_directory.h"
#include "coat/models/model_config.h"
#include "coat/models/unit_layout.h"
#include "coat/ops/copy.h"
#include "coat/ops/runtime.h"

namespace coat::io {

namespace fs = std::filesystem;

uint64_t parse_shard_size(std::string_view text) {
  const std::string original(text);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  size_t digits = 0;
  while (digits < text.size() &&
         (std::isdigit(static_cast<unsigned char>(text[digits])) || text[digits] == '.'))
    ++digits;
  std::string unit(text.substr(digits));
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  const std::pair<const char*, double> units[] = {
      {"", 1.0},    {"B", 1.0},      {"KB", 1e3},        {"MB", 1e6},           {"GB", 1e9},
      {"TB", 1e12}, {"KIB", 1024.0}, {"MIB", 1048576.0}, {"GIB", 1073741824.0}, {"TIB", 1099511627776.0}};
  std::optional<double> multiplier;
  for (const auto& [name, factor] : units) {
    if (unit == name) multiplier = factor;
  }
  double value = 0.0;
  bool number_ok = digits > 0;
  try {
    size_t used = 0;
    if (number_ok) value = std::stod(std::string(text.substr(0, digits)), &used);
    number_ok = number_ok && used == digits;  // "1.2.3" is no number
  } catch (const std::exception&) {
    number_ok = false;
  }
  const double bytes = std::floor(value * multiplier.value_or(0.0));
  if (!multiplier || !number_ok || !(bytes >= 1.0) || bytes > 1.8e19) {
    throw InvalidArgument(
        detail::concat("[shard size] '", original,
                       "' is not a size: write a number with KB, MB, GB or TB (powers of 1000) or "
                       "KiB, MiB, GiB or TiB (powers of 1024), e.g. 5GB, or a byte count"));
  }
  return static_cast<uint64_t>(bytes);
}

HfShardPlan plan_hf_shards(const std::vector<SafetensorsTensorSpec>& tensors, uint64_t max_shard_bytes) {
  COAT_ARG_CHECK(max_shard_bytes > 0, "plan_hf_shards", "the shard size must be positive");
  HfShardPlan plan;
  std::vector<size_t> current;
  uint64_t current_bytes = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t bytes = tensors[i].bytes();
    plan.total_bytes += bytes;
    if (bytes > max_shard_bytes) {  // alone, wherever it falls
      plan.tensors.push_back({i});
      continue;
    }
    if (current_bytes + bytes > max_shard_bytes) {
      plan.tensors.push_back(std::move(current));
      current.clear();
      current_bytes = 0;
    }
    current.push_back(i);
    current_bytes += bytes;
  }
  if (!current.empty()) plan.tensors.push_back(std::move(current));
  const size_t n = plan.tensors.size();
  for (size_t i = 0; i < n; ++i) {
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", i + 1, n);
    plan.files.push_back(n == 1 ? "model.safetensors" : name);
  }
  return plan;
}

namespace {

// JSON as transformers writes it (json.dumps(indent=2, sort_keys=True) + "\n"): nlohmann::json's objects
// are sorted maps.
void write_json(const fs::path& path, const nlohmann::json& j) {
  write_string_atomically(path, j.dump(2) + "\n");
}

struct SpecialTokens {
  nlohmann::json bos, eos;  ///< ids, or null when unknown
  std::string source;
};

/// The run's tokenizer knows its ids (a SentencePiece .model, or an HF tokenizer.json with the
/// generation_config.json / tokenizer_config.json beside it, as an imported model's run names it); without
/// one the model config's defaults stand (1 and 2, wrong for Llama-3 and OLMo).
SpecialTokens special_tokens(const nlohmann::json& run_config, const nlohmann::json& hf_config) {
  SpecialTokens out{hf_config.value("bos_token_id", nlohmann::json()),
                    hf_config.value("eos_token_id", nlohmann::json()), "the model config"};
  const std::string tokenizer =
      run_config.contains("data") ? run_config.at("data").value("tokenizer", std::string()) : std::string();
  std::error_code ec;
  if (tokenizer.empty() || !fs::is_regular_file(tokenizer, ec)) return out;
  if (fs::path(tokenizer).extension() == ".json") {
    const data::HfTokenizer tok = data::HfTokenizer::load(tokenizer);
    out.bos =
        tok.bos_id() >= 0 ? nlohmann::json(tok.bos_id()) : nlohmann::json();  // the tokenizer knows best
    const std::vector<int32_t>& eos = tok.eos_ids();
    if (!eos.empty()) out.eos = eos.size() == 1 ? nlohmann::json(eos[0]) : nlohmann::json(eos);
    out.source = "tokenizer " + tokenizer;
    return out;
  }
  if (fs::path(tokenizer).extension() != ".model") return out;
  const data::Tokenizer tok = data::Tokenizer::load(tokenizer);
  out.bos = tok.bos_id() >= 0 ? nlohmann::json(tok.bos_id()) : nlohmann::json();
  out.eos = tok.eos_id() >= 0 ? nlohmann::json(tok.eos_id()) : nlohmann::json();
  out.source = "tokenizer " + tokenizer;
  return out;
}

/// What GenerationConfig.from_model_config keeps of a config.json: the special token ids that are set.
nlohmann::json generation_config(const nlohmann::json& hf_config) {
  nlohmann::json g;
  g["_from_model_config"] = true;
  for (const char* key : {"bos_token_id", "eos_token_id", "pad_token_id"}) {
    if (hf_config.contains(key) && !hf_config.at(key).is_null()) g[key] = hf_config.at(key);
  }
  return g;
}

/// The tensors HF's model holds, in its state dict's order, checked against the checkpoint.
std::vector<SafetensorsTensorSpec> export_specs(const models::ModelConfig& config, const CheckpointReader& ck,
                                                DType dtype) {
  std::vector<SafetensorsTensorSpec> specs;
  for (const models::UnitLayout& unit : models::unit_layouts(config)) {
    for (const auto& [name, shape] : unit.params) {
      if (!ck.contains(name)) {
        throw IoError(detail::concat("checkpoint ", ck.dir(), " has no tensor '", name, "', which a ",
                                     config.architecture_name(), " model of its config holds"));
      }
      if (ck.info(name).shape != shape) {
        throw IoError(detail::concat("checkpoint ", ck.dir(), ": tensor '", name, "' has shape ",
                                     shape_str(ck.info(name).shape), " but its config implies ",
                                     shape_str(shape)));
      }
      specs.push_back({name, dtype, shape});
    }
  }
  return specs;
}

}  // namespace

HfExportResult export_hf_model(const fs::path& checkpoint_dir, const fs::path& output,
                               const HfExportOptions& options) {
  COAT_ARG_CHECK(options.dtype == DType::F32 || options.dtype == DType::BF16, "export_hf_model",
                 "dtype must be F32 or BF16, not ", dtype_name(options.dtype));
  StagedDirectory staged(output, options.force, "config.json");  // refuses a wrong output before any work
  const CheckpointReader ck = CheckpointReader::open(checkpoint_dir);
  const nlohmann::json& meta = ck.meta();
  if (!meta.contains("config") || !meta.at("config").contains("model")) {
    throw IoError(detail::concat("checkpoint ", ck.dir(), ": meta.json has no config.model"));
  }
  const models::ModelConfig config =
      models::ModelConfig::from_config(ConfigSection(meta.at("config").at("model"), "model"));
  const std::vector<SafetensorsTensorSpec> specs = export_specs(config, ck, options.dtype);
  const HfShardPlan plan = plan_hf_shards(specs, options.max_shard_bytes);

  const ContextPtr host = ops::make_context(Device::cpu());
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t f = 0; f < plan.files.size(); ++f) {
    std::vector<SafetensorsTensorSpec> file_specs;
    for (size_t i : plan.tensors[f]) {
      file_specs.push_back(specs[i]);
      weight_map[specs[i].name] = plan.files[f];
    }
    write_safetensors_streamed(staged.path() / plan.files[f], file_specs,
                               [&](size_t i) {
                                 const Tensor master = ck.read(file_specs[i].name, host);
                                 return master.dtype() == options.dtype ? master
                                                                        : ops::cast(master, options.dtype);
                               },
                               {{"format", "pt"}});
  }
  if (plan.sharded()) {
    nlohmann::json index;
    index["metadata"] = {{"total_parameters", config.parameter_count()}, {"total_size", plan.total_bytes}};
    index["weight_map"] = std::move(weight_map);
    write_json(staged.path() / "model.safetensors.index.json", index);
  }
  nlohmann::json hf = config.to_hf_json();
  hf["torch_dtype"] = options.dtype == DType::BF16 ? "bfloat16" : "float32";
  const SpecialTokens special = special_tokens(meta.at("config"), hf);
  hf["bos_token_id"] = special.bos;
  hf["eos_token_id"] = special.eos;
  write_json(staged.path() / "config.json", hf);
  write_json(staged.path() / "generation_config.json", generation_config(hf));
  staged.commit();

  HfExportResult result;
  result.checkpoint = ck.dir();
  result.output = staged.target();
  result.step = ck.step();
  result.checkpoint_ranks = ck.world_size();
  result.tensor_count = specs.size();
  result.file_count = plan.files.size();
  result.total_bytes = plan.total_bytes;
  result.special_tokens_source = special.source;
  return result;
}

}  // namespace coat::io
