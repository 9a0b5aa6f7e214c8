// Native tensor files: named tensors of any dtype behind a checksummed JSON index, each tensor 256-byte
// aligned and checksummed with CRC-32C. One such file holds one rank's part of a checkpoint.
//
// Layout (little-endian):
//   bytes  0-7   magic "COATCKPT"
//          8-11  format version (u32, 1)
//         12-15  reserved (0)
//         16-23  index length in bytes (u64)
//         24-27  CRC-32C of the index bytes (u32)
//         28-31  reserved (0)
//         32-39  data offset (u64): where the data section starts, a multiple of 256
//         40-47  data length in bytes (u64); the file is exactly data offset + data length bytes long
//         48-63  reserved (0)
//   64 ... the index, UTF-8 JSON:
//          {"tensors":[{"name":"model.norm.weight","dtype":"f32","shape":[4096],"offset":0,
//                       "bytes":16384,"crc32c":"1a2b3c4d"}, ...]}
//          dtype as dtype_name() spells it; offset from the start of the data section (a multiple of
//          256); crc32c of the tensor's bytes as 8 hex digits; entries in the order they were written.
//   zero padding to the data offset, then the tensors' bytes (row-major), zero padding between them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "coat/core/tensor.h"
#include "coat/io/parallel_io.h"

namespace coat::io {

inline constexpr char kTensorFileMagic[8] = {'C', 'O', 'A', 'T', 'C', 'K', 'P', 'T'};
inline constexpr uint32_t kTensorFileVersion = 1;
inline constexpr uint64_t kTensorFileHeaderBytes = 64;
inline constexpr uint64_t kTensorFileAlignment = 256;

/// One tensor of a tensor file.
struct TensorFileEntry {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t offset = 0;  ///< of its first byte, from the start of the file
  uint64_t bytes = 0;
  uint32_t crc32c = 0;
  int64_t numel() const { return shape_numel(shape); }
};

/// How write_tensor_file works: the defaults suit a checkpoint of tens of GB.
struct TensorFileWriteOptions {
  TensorFileWriteOptions();  ///< io_threads = default_io_threads()
  /// Threads that checksum and write (1: the calling thread alone, tensor after tensor).
  int io_threads;
  /// Tensors larger than this are checksummed and written in pieces of this size, on several threads.
  uint64_t chunk_bytes = kIoChunkBytes;
  /// Each piece is written back to the disk and dropped from the page cache as soon as it is written
  /// (AtomicFile::write_back_and_drop) instead of all of them at the final fsync. On the 2-core VM this was
  /// measured on (tests/io/test_tensor_file_bandwidth.cpp, 2 GiB) it made the whole write 1.5 to 3.5 times
  /// faster at 1 and 2 threads and no slower at 4: dirty pages piling up made the final fsync the slow part.
  bool write_back = true;
  /// An old file to overwrite in place instead of writing a new one (AtomicFile's recycling: its space is
  /// reused, nothing is freed or allocated); empty or missing: a new file. The bytes written are the same:
  /// the padding between the index and the tensors is written as zeros either way.
  std::filesystem::path recycle;
};

/// What write_tensor_file wrote: the file's size and the CRC-32C of all its bytes (combined from the
/// pieces' checksums, so nothing is read back): what a checkpoint's COMPLETE records of a rank file.
struct TensorFileSummary {
  uint64_t bytes = 0;
  uint32_t crc32c = 0;
};

/// The size write_tensor_file gives a file of `tensors` (header, index, padding and data), without writing.
uint64_t tensor_file_bytes(const std::vector<std::pair<std::string, Tensor>>& tensors);

/// Writes the tensors, in the order given, to `path` atomically (see AtomicFile: a failure leaves an
/// existing file untouched and no temporary file). Tensors may live on any device and have any strides;
/// each is copied to the CPU (bit for bit) on the calling thread, in order, and its pieces are checksummed
/// and written at their offsets by the io_threads, so at most about 2 * io_threads + 1 tensors' copies are
/// in host memory at once. The bytes do not depend on io_threads or chunk_bytes. Names must be unique and
/// non-empty (InvalidArgument otherwise); a failed write is an IoError naming the file and the tensor.
TensorFileSummary write_tensor_file(const std::filesystem::path& path,
                                    const std::vector<std::pair<std::string, Tensor>>& tensors,
                                    const TensorFileWriteOptions& options = {});

/// One request of TensorFileReader::read_slices_into: elements [element_offset, element_offset +
/// dst.numel()) of tensor `name` into dst (a view: the caller's tensor is filled).
struct TensorSliceRead {
  std::string name;
  int64_t element_offset = 0;
  Tensor dst;
};

/// Reads a tensor file through a read-only memory mapping. open() validates the header, the index and
/// every entry's bounds against the file size; checksums are verified when a tensor is first read (once
/// per entry and reader; copies of a reader share this), unless mark_verified said that every byte of the
/// file was checked already. Errors: IoError for a damaged file (naming the
/// file, and the tensor or byte counts involved), InvalidArgument for a request the file cannot satisfy
/// (unknown name, mismatched destination, slice out of range). Reading is thread-safe.
class TensorFileReader {
 public:
  /// An empty reader (no file); open() makes a real one.
  TensorFileReader() = default;
  static TensorFileReader open(const std::filesystem::path& path);

  const std::filesystem::path& path() const;
  /// The file's size and the CRC-32C of its index (which holds every tensor's CRC-32C): what a checkpoint's
  /// COMPLETE marker records of each rank file, so that a file swapped or cut short is found at open.
  uint64_t file_bytes() const;
  uint32_t index_crc32c() const;
  /// Entries in file order.
  const std::vector<TensorFileEntry>& entries() const;
  bool contains(const std::string& name) const;
  /// The entry of `name`; InvalidArgument naming the file and listing some of its tensors when absent.
  const TensorFileEntry& entry(const std::string& name) const;

  /// The tensor as a new contiguous tensor on `context`'s device (a fresh CPU context when null).
  Tensor read(const std::string& name, const ContextPtr& context = nullptr,
              MemoryCategory category = MemoryCategory::Weights) const;
  /// Copies the tensor into dst (any device, any strides), which must have its dtype and shape:
  /// "checkpoint tensor 'model.norm.weight' has shape (4096) but the model expects (2048) (tensor file
  /// ...)". dst is unchanged when a check fails, the checksum included.
  void read_into(const std::string& name, Tensor& dst) const;
  /// Elements [element_offset, element_offset + count) of the tensor in row-major order, as a new 1-D
  /// tensor on `context`'s device (CPU when null): for loading a shard of a flat unit saved with another
  /// sharding. The whole tensor's checksum is verified on its first access.
  Tensor read_slice(const std::string& name, int64_t element_offset, int64_t count,
                    const ContextPtr& context = nullptr,
                    MemoryCategory category = MemoryCategory::Weights) const;
  /// Elements [element_offset, element_offset + dst.numel()) into dst (same dtype; any shape, device and
  /// strides; filled in row-major order).
  void read_slice_into(const std::string& name, int64_t element_offset, Tensor& dst) const;

  /// Many read_slice_into at once (destinations must not overlap): every request is checked first (the same
  /// InvalidArgument), the checksums of the tensors they touch are verified by pieces on up to io_threads
  /// threads (the first damaged tensor in request order is named, as read_slice_into would name it), then
  /// contiguous host destinations are filled on those threads and the others on the calling thread.
  void read_slices_into(const std::vector<TensorSliceRead>& reads, int io_threads) const;

  /// Verifies one tensor's checksum (IoError "checksum mismatch" naming file and tensor).
  void verify(const std::string& name) const;
  /// Verifies every tensor's checksum, by pieces on up to io_threads threads; the first damaged tensor in
  /// file order is named.
  void verify_all(int io_threads = default_io_threads()) const;
  /// Takes every tensor as verified without reading it: for a caller that has checked every byte of the file
  /// against a checksum of its own (CheckpointReader::verify_file, against the COMPLETE record of the whole
  /// file), so that reads do not checksum the same bytes again. This reader and its copies.
  void mark_verified() const;
  /// The tensor bytes this reader and its copies have checksummed (each verified tensor's bytes once): what
  /// shows that a load checksums nothing twice.
  uint64_t checksummed_bytes() const;

 private:
  struct State;
  const State& state() const;
  void verify_entry(size_t index) const;
  void verify_entries(const std::vector<size_t>& indices, int io_threads) const;
  size_t check_slice_read(const std::string& name, int64_t element_offset, const Tensor& dst) const;
  const uint8_t* slice_bytes(size_t index, int64_t element_offset) const;
  size_t index_of(const std::string& name) const;
  std::shared_ptr<State> state_;
};

}  // namespace coat::io
