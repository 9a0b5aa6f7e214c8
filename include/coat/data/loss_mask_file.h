// Loss-mask files: one byte per token of a token file, 1 when the token counts in the loss as a target (its
// prediction from the tokens before it is trained), 0 when it does not (the prompt of a supervised
// fine-tuning example, the first token of an example, padding). Memory-mapped and checked in full when
// opened; written atomically and streamed, like token files (token_file.h). scripts/prepare_data.py writes
// them too: the layout is a contract.
//
// Layout (little-endian): bytes 0-7 "COATMSK\0", 8-11 version (1), 12-15 reserved (0), 16-23 entry count (the
// token file's token count); then `count` bytes, each 0 or 1.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>

#include "coat/io/atomic_file.h"
#include "coat/io/mapped_file.h"

namespace coat::data {

class TokenFile;

struct LossMaskHeader {
  static constexpr char kMagic[8] = {'C', 'O', 'A', 'T', 'M', 'S', 'K', '\0'};
  static constexpr uint32_t kVersion = 1;
  static constexpr size_t kBytes = 24;
};

/// A read-only, memory-mapped loss mask whose every entry was checked to be 0 or 1.
class LossMaskFile {
 public:
  /// Opens a loss-mask file and checks its header, its size and every entry; throws IoError naming the file
  /// and what is wrong (missing, not a loss-mask file, unknown version, reserved field set, truncated or
  /// longer than its count, an entry other than 0 or 1 with its position and value). One sequential pass.
  static LossMaskFile open(const std::filesystem::path& path);
  /// open(), and the mask must have one entry per token of `tokens` (IoError naming both files and counts).
  static LossMaskFile open_for(const std::filesystem::path& path, const TokenFile& tokens);

  /// Entries (= the token file's tokens).
  uint64_t size() const { return count_; }
  /// Entries that are 1, over the whole file.
  uint64_t counted() const { return counted_; }
  /// CRC-32C of the entries (not the header): checkpoints record it to recognise the mask when a run resumes.
  uint32_t checksum() const { return checksum_; }
  const std::filesystem::path& path() const { return file_.path(); }
  /// Whether token i counts in the loss as a target.
  bool counts(uint64_t i) const { return entries_[i] != 0; }
  /// Entries that are 1 in [start, start + n); throws IoError when the range is past the end.
  uint64_t counted_in(uint64_t start, uint64_t n) const;
  /// Sets targets[i] to `ignore_index` where entry start + i is 0 (targets[i] is the target token start + i);
  /// throws IoError when the range is past the end.
  void mask_targets(uint64_t start, std::span<int32_t> targets, int32_t ignore_index) const;

 private:
  void check_range(uint64_t start, uint64_t n) const;

  io::MappedFile file_;
  const uint8_t* entries_ = nullptr;
  uint64_t count_ = 0;
  uint64_t counted_ = 0;
  uint32_t checksum_ = 0;
};

/// Streams entries into a loss-mask file through io::AtomicFile: the final path holds either the previous
/// file or the complete new one; a writer destroyed without commit() leaves nothing behind.
class LossMaskWriter {
 public:
  /// Throws IoError when the temporary file cannot be created.
  explicit LossMaskWriter(const std::filesystem::path& path);

  /// Appends entries; throws InvalidArgument naming the file and the position of the first entry other than
  /// 0 or 1 (nothing of a rejected span is written).
  void append(std::span<const uint8_t> entries);
  /// Entries appended so far.
  uint64_t count() const { return count_; }
  /// Writes the count into the header, syncs and renames the file into place. Appending after it throws.
  void commit();

 private:
  io::AtomicFile file_;
  uint64_t count_ = 0;
};

/// Writes a whole loss mask atomically (LossMaskWriter); an entry other than 0 or 1 throws InvalidArgument and
/// leaves the path as it was.
void write_loss_mask_file(const std::filesystem::path& path, std::span<const uint8_t> entries);

}  // namespace coat::data
