// Reading a checkpoint directory of either format as one process's layout: every parameter's master by its HF
// name and shape, and every unit's optimizer state tensors ("<unit>.exp_avg", "<unit>.exp_avg.log2_scale",
// ...) whole, flat. Format 1 stores exactly these tensors in one file; format 2 stores each rank's slices of
// the units, and a read (or a ranged read) gathers the bytes it needs from whichever rank files hold them,
// straight into the destination (no rank ever holds the whole model to load its slice). What the trainer
// loads, what train.init_from and the tools (coat-generate, coat-convert, coat-optim-study, coat-grads) read.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "coat/core/tensor.h"
#include "coat/io/checkpoint_layout.h"
#include "coat/io/parallel_io.h"
#include "coat/io/tensor_file.h"

namespace coat::io {

/// One request of CheckpointReader::read_ranges_into: elements [element_offset, element_offset + dst.numel())
/// of tensor `name` into dst (a view: the caller's tensor is filled).
struct CheckpointRangeRead {
  std::string name;
  int64_t element_offset = 0;
  Tensor dst;
};

struct CheckpointTensorInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
};

class CheckpointReader {
 public:
  CheckpointReader() = default;
  /// Opens a checkpoint directory (not a run directory): COMPLETE read, meta.json checked against the size
  /// and CRC-32C that COMPLETE records, parsed, its format (1 or 2) and layout validated. Rank files are
  /// opened when first read (their sizes checked against COMPLETE). IoError naming the directory and the file
  /// when it is missing, incomplete or damaged. `io_threads` verify and copy in verify_file and the batch
  /// reads (checkpoint.io_threads; 1: one tensor after another on the calling thread).
  static CheckpointReader open(const std::filesystem::path& dir, int io_threads = default_io_threads());

  const std::filesystem::path& dir() const;
  int format_version() const;
  int64_t step() const;
  /// Ranks of the run that wrote it (meta.json "world_size").
  int world_size() const;
  const nlohmann::json& meta() const;
  /// Format 2: the units and slices; null for format 1.
  const CheckpointLayout* layout() const;

  /// The tensors of the one-process layout, in file (format 1) or unit order.
  const std::vector<CheckpointTensorInfo>& tensors() const;
  bool contains(const std::string& name) const;
  /// InvalidArgument naming the checkpoint and some of its tensors when absent.
  const CheckpointTensorInfo& info(const std::string& name) const;

  /// The whole tensor as a new contiguous tensor on `context`'s device (CPU when null).
  Tensor read(const std::string& name, const ContextPtr& context = nullptr,
              MemoryCategory category = MemoryCategory::Weights) const;
  /// Into dst, which must have the tensor's shape and dtype ("checkpoint tensor '...' has shape ... but the
  /// model expects ...").
  void read_into(const std::string& name, Tensor& dst) const;
  /// Elements [element_offset, element_offset + dst.numel()) of the tensor in row-major order into dst (same
  /// dtype, contiguous, any shape and device): a rank's slice of a unit saved with another sharding.
  void read_range_into(const std::string& name, int64_t element_offset, Tensor& dst) const;

  /// Many read_into at once (destinations must not overlap): the same checks and errors, then each rank
  /// file's checksums verified and its bytes copied on the io_threads (TensorFileReader::read_slices_into).
  /// What a resume loads a whole rank's state with.
  void read_into(const std::vector<std::pair<std::string, Tensor>>& reads) const;
  /// Many read_range_into at once, likewise.
  void read_ranges_into(const std::vector<CheckpointRangeRead>& reads) const;
  int io_threads() const;

  /// Rank files: rank_00000.bin ... (format 1: one).
  int file_count() const;
  const TensorFileReader& file(int index) const;
  /// Verifies rank file `index` against COMPLETE (every byte's CRC-32C; for checkpoints of earlier builds,
  /// every tensor's own checksum). IoError naming the file and, where one is, the damaged tensor. Once it has
  /// passed, this reader reads the file's tensors without checksumming them again.
  void verify_file(int index) const;
  void verify_all() const;
  /// Takes every rank file as verified: each has passed verify_file since it was written, here or on other
  /// processes that read the same files and agreed that all passed (a resume's ranks share the files out:
  /// train::open_resume_checkpoint). From then on tensors are read without checksumming them again; a rank
  /// file opened later still has its size checked against COMPLETE and its index against its checksum.
  /// Without it (any other way of reading a checkpoint) each tensor's own checksum is verified when it is
  /// first read. This reader and its copies.
  void mark_all_files_verified() const;
  /// The rank-file bytes this reader and its copies have checksummed: whole files in verify_file, tensors
  /// by their own checksums when first read. Each byte once: a load after verify_all adds nothing.
  uint64_t checksummed_bytes() const;

 private:
  struct State;
  const State& state() const;
  size_t index_of(const std::string& name) const;
  void check_whole_read(const std::string& name, const Tensor& dst) const;
  /// The pieces of a ranged read (checked as read_range_into checks), appended to each rank file's batch.
  void plan_range_read(const CheckpointRangeRead& read,
                       std::vector<std::vector<TensorSliceRead>>& by_file) const;
  std::shared_ptr<State> state_;
};

}  // namespace coat::io
