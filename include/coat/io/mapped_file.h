// A read-only memory mapping of a whole file, shared by the copies of its handle: what the checkpoint and
// safetensors readers parse and copy tensors out of.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

namespace coat::io {

class MappedFile {
 public:
  /// An empty handle (no file).
  MappedFile() = default;
  /// Maps `path` read-only. `kind` names the file in errors ("tensor file", "safetensors file"); throws
  /// IoError "<kind> <path>: cannot open (No such file or directory)" and the like.
  static MappedFile open(const std::filesystem::path& path, const std::string& kind);

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }
  bool is_open() const { return mapping_ != nullptr; }
  /// Asks the kernel to start reading bytes [offset, offset + bytes) from the disk now (madvise WILLNEED, an
  /// asynchronous readahead of the whole range). Without it a pass over a mapping that is not cached reads
  /// page fault by page fault, a readahead window at a time (about 0.9 GB/s from a disk that streams 2.4).
  /// Advice only: failures are ignored.
  void will_need(uint64_t offset, uint64_t bytes) const;

 private:
  struct Mapping;
  std::shared_ptr<Mapping> mapping_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  std::filesystem::path path_;
};

}  // namespace coat::io
