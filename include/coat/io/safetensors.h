// Hugging Face safetensors files: the writer and a memory-mapped reader.
//
// Format: an 8-byte little-endian header length N; N bytes of UTF-8 JSON
//   {"__metadata__":{"format":"pt"},"model.embed_tokens.weight":{"dtype":"BF16","shape":[32000,4096],
//    "data_offsets":[0,262144000]}, ...}
// (data_offsets [begin, end) relative to the data section, which starts at 8 + N); then the data section,
// tensors in row-major order, back to back. The writer keeps the order given, puts "__metadata__" (a map of
// strings) first when there is any, and pads the JSON with spaces so that the data starts 8-byte aligned.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "coat/core/tensor.h"

namespace coat::io {

/// The safetensors name of a dtype: F32, F64, BF16, F16, F8_E4M3, F8_E5M2, I32, I64, U8, U16, U32.
std::string_view safetensors_dtype_name(DType dtype);
/// Our dtype of a safetensors dtype name; nullopt for one we have no dtype for (BOOL, I8, I16, U64,
/// F8_E8M0, F4, ...) or do not know.
std::optional<DType> dtype_from_safetensors(std::string_view name);

/// One tensor of a safetensors file.
struct SafetensorsEntry {
  std::string name;
  std::string dtype_string;    ///< as the file spells it ("BF16")
  std::optional<DType> dtype;  ///< nullopt for a dtype coat cannot represent (such a tensor cannot be read)
  Shape shape;
  uint64_t begin = 0;  ///< data_offsets, relative to the data section
  uint64_t end = 0;
  int64_t numel() const { return shape_numel(shape); }
  uint64_t bytes() const { return end - begin; }
};

/// Writes the tensors (any device, any strides; copied to the CPU bit for bit one at a time) in the order
/// given, atomically (see AtomicFile). Names must be unique, non-empty and not "__metadata__"
/// (InvalidArgument otherwise).
void write_safetensors(const std::filesystem::path& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

/// What the header of a streamed write declares for one tensor.
struct SafetensorsTensorSpec {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t bytes() const { return static_cast<uint64_t>(shape_numel(shape)) * dtype_size(dtype); }
};

/// The same file as write_safetensors, with the tensors made one at a time: the header is written from
/// `specs`, then `produce(i)` is called for each tensor in order and its bytes written before the next is
/// made, so that only one tensor is held at a time (exports of models larger than memory's half). A produced
/// tensor whose dtype or shape differs from its spec is an InvalidArgument naming both; an exception from
/// produce leaves the target as it was.
void write_safetensors_streamed(const std::filesystem::path& path,
                                const std::vector<SafetensorsTensorSpec>& specs,
                                const std::function<Tensor(size_t index)>& produce,
                                const std::map<std::string, std::string>& metadata = {});

/// Reads a safetensors file through a read-only memory mapping. open() validates the header length, the
/// JSON, every entry's dtype, shape and byte length, and that the entries tile the data section exactly
/// (as the reference implementation requires): IoError naming the file, the tensor and the byte counts.
class SafetensorsReader {
 public:
  SafetensorsReader() = default;
  static SafetensorsReader open(const std::filesystem::path& path);

  const std::filesystem::path& path() const;
  /// Entries in the order of the file's JSON header.
  const std::vector<SafetensorsEntry>& entries() const;
  const std::map<std::string, std::string>& metadata() const;
  /// Where the data section starts (8 + header length).
  uint64_t data_offset() const;
  bool contains(const std::string& name) const;
  /// InvalidArgument naming the file and listing some of its tensors when absent.
  const SafetensorsEntry& entry(const std::string& name) const;

  /// The tensor as a new contiguous tensor on `context`'s device (a fresh CPU context when null).
  Tensor read(const std::string& name, const ContextPtr& context = nullptr,
              MemoryCategory category = MemoryCategory::Weights) const;
  /// Copies the tensor into dst (any device, any strides), which must have its dtype and shape
  /// (InvalidArgument naming both shapes otherwise).
  void read_into(const std::string& name, Tensor& dst) const;

 private:
  struct State;
  const State& state() const;
  std::shared_ptr<State> state_;
};

}  // namespace coat::io
