// Export of a native checkpoint (either format, written by any number of ranks) as a directory that HF
// transformers' from_pretrained loads: config.json, generation_config.json and model.safetensors, or, above
// the shard size, model-0000i-of-0000N.safetensors with model.safetensors.index.json, as save_pretrained
// writes them. Tensors are read, cast and written one at a time (the model is never held whole), into a
// staged directory renamed into place at the end (StagedDirectory).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "coat/core/dtype.h"
#include "coat/io/safetensors.h"

namespace coat::io {

/// save_pretrained's default max_shard_size, "5GB".
inline constexpr uint64_t kDefaultMaxShardBytes = 5'000'000'000;

/// A shard size as huggingface_hub spells it: a number with "KB", "MB", "GB" or "TB" (powers of 1000, a
/// fraction allowed: "1.5GB"), or with "KiB", "MiB", "GiB", "TiB" (powers of 1024), or a plain byte count.
/// InvalidArgument naming the text otherwise (or for 0).
uint64_t parse_shard_size(std::string_view text);

/// Which tensors go to which file.
struct HfShardPlan {
  std::vector<std::string> files;            ///< "model.safetensors" alone, or model-00001-of-0000N...
  std::vector<std::vector<size_t>> tensors;  ///< per file, indices into the tensors planned
  uint64_t total_bytes = 0;                  ///< the sum of the tensors' bytes (index "total_size")
  bool sharded() const { return files.size() > 1; }
};

/// huggingface_hub's split of a state dict, in the tensors' order: a tensor larger than the limit gets a
/// file of its own; otherwise it joins the current file unless that would take it past the limit, which
/// starts a new one. One file is named model.safetensors; several model-%05d-of-%05d.safetensors.
HfShardPlan plan_hf_shards(const std::vector<SafetensorsTensorSpec>& tensors, uint64_t max_shard_bytes);

struct HfExportOptions {
  DType dtype = DType::F32;  ///< F32 or BF16 (rounded to nearest even, as torch casts)
  uint64_t max_shard_bytes = kDefaultMaxShardBytes;
  bool force = false;  ///< replace a non-empty output directory that holds a config.json
};

struct HfExportResult {
  std::filesystem::path checkpoint;  ///< the checkpoint directory read
  std::filesystem::path output;
  int64_t step = 0;
  int checkpoint_ranks = 0;  ///< ranks of the run that wrote the checkpoint
  size_t tensor_count = 0;
  size_t file_count = 0;
  uint64_t total_bytes = 0;
  std::string
      special_tokens_source;  ///< where the bos/eos ids came from ("tokenizer PATH", "the model config")
};

/// Exports checkpoint directory `checkpoint_dir` (not a run directory: resolve it first) into `output`.
/// The special token ids of config.json and generation_config.json come from the run's tokenizer
/// (data.tokenizer: a SentencePiece .model, or an HF tokenizer.json with its generation_config.json or
/// tokenizer_config.json beside it, as data::HfTokenizer finds them) when it can be read, else from the
/// model config.
/// IoError naming the checkpoint and tensor when one is missing or has another shape than the config
/// implies; the output is then left as it was.
HfExportResult export_hf_model(const std::filesystem::path& checkpoint_dir,
                               const std::filesystem::path& output, const HfExportOptions& options);

}  // namespace coat::io
