// A checkpoint's meta.json as coat-generate, coat-convert export and train.init_from read it
// (io::open_checkpoint, then the model section as train::load_model reads it): the input is meta.json of a
// checkpoint directory whose COMPLETE marker and rank file are valid.
#include <nlohmann/json.hpp>

#include "coat/core/config_reader.h"
#include "coat/io/checkpoint.h"
#include "coat/io/tensor_file.h"
#include "coat/models/model_config.h"
#include "coat/ops/creation.h"
#include "coat/ops/runtime.h"
#include "fuzz_common.h"

namespace {

const std::filesystem::path& checkpoint_dir() {
  static const std::filesystem::path dir = [] {
    const std::filesystem::path d = coat::fuzz::scratch_dir() / "step_00000001";
    std::filesystem::create_directories(d);
    const coat::ContextPtr cpu = coat::ops::make_context(coat::Device::cpu());
    coat::io::write_tensor_file(d / coat::io::checkpoint_rank_file_name(0),
                                {{"model.norm.weight", coat::ops::zeros(cpu, {4}, coat::DType::F32)}});
    const uint8_t marker[] = "{}\n";
    coat::fuzz::write_scratch("step_00000001/COMPLETE", marker, sizeof(marker) - 1);
    return d;
  }();
  return dir;
}

// KNOWN, not fixed here: io::open_checkpoint reads format_version, step and world_size with get<int>() /
// get<int64_t>(), which converts a float such as 1e102 to an integer: undefined behaviour (UBSan stops).
// src/io/checkpoint.cpp belongs to the checkpoint format rewrite, which reads these typed; until it lands such
// inputs are skipped (fuzz/known/checkpoint_meta/ keeps the one found).
bool has_float_header_field(const uint8_t* data, size_t size) {
  const nlohmann::json doc = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object()) return false;
  for (const char* key : {"format_version", "step", "world_size"}) {
    if (doc.contains(key) && doc.at(key).is_number_float()) return true;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (has_float_header_field(data, size)) return 0;
  const std::filesystem::path& dir = checkpoint_dir();
  coat::fuzz::write_scratch("step_00000001/meta.json", data, size);
  coat::fuzz::expect_only_library_errors([&] {
    const coat::io::LoadedCheckpoint ck = coat::io::open_checkpoint(dir);
    if (!ck.meta.is_object() || !ck.meta.contains("config") || !ck.meta.at("config").is_object() ||
        !ck.meta.at("config").contains("model")) {
      return;  // load_model refuses these by name
    }
    const coat::models::ModelConfig c = coat::models::ModelConfig::from_config(
        coat::ConfigSection(ck.meta.at("config").at("model"), "model"));
    (void)c.parameter_count();
  });
  return 0;
}
