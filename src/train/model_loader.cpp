#include "coat/train/model_loader.h"

#include "coat/io/checkpoint.h"
#include "coat/io/checkpoint_reader.h"

namespace coat::train {

LoadedModel load_model(const std::filesystem::path& path, const ContextPtr& context) {
  return load_model(path, context, /*with_grads=*/false, std::nullopt);
}

LoadedModel load_model(const std::filesystem::path& path, const ContextPtr& context, bool with_grads,
                       std::optional<DType> compute_dtype) {
  LoadedModel out;
  out.checkpoint = resolve_checkpoint_dir(path);
  // Either format and any world size: the reader assembles each parameter from the rank files that hold it.
  const io::CheckpointReader ck = io::CheckpointReader::open(out.checkpoint);
  out.meta = ck.meta();
  if (!out.meta.contains("config") || !out.meta.at("config").contains("model")) {
    throw IoError(detail::concat("checkpoint '", out.checkpoint.string(), "': meta.json has no config.model"));
  }
  const models::ModelConfig mc = models::ModelConfig::from_config(ConfigSection(out.meta.at("config").at("model"), "model"));
  out.model = std::make_unique<models::Transformer>(mc, context, DType::F32, with_grads, compute_dtype);
  for (nn::Parameter& p : out.model->parameters()) ck.read_into(p.name, p.master);
  out.model->sync_compute_weights();
  return out;
}

}  // namespace coat::train
