// Token files: a small header (magic, version, token width, vocabulary size, count) followed by the
// tokens, memory-mapped for reading. Headerless u16/u32 arrays (as OLMo and nanoGPT write them) are read
// by naming their width. Writing is atomic (a temporary file renamed into place) and streams, so a corpus
// never has to fit in memory.
//
// Layout (little-endian): bytes 0-7 "COATTOK\0", 8-11 version (1), 12-15 token width in bytes (2 or 4),
// 16-19 vocab_size (0 = unknown), 20-23 reserved (0), 24-31 token count; then count tokens.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace coat::data {

enum class TokenWidth : uint8_t { U16 = 2, U32 = 4 };

/// "u16" or "u32" (also "uint16"/"uint32") -> width; throws InvalidArgument naming the accepted names.
TokenWidth parse_token_width(const std::string& name);
/// The narrowest width that holds every id of a vocabulary of `vocab_size` tokens.
TokenWidth token_width_for_vocab(uint64_t vocab_size);

/// The first token at or past a vocabulary limit.
struct TokenOutOfRange {
  uint64_t position = 0;
  uint32_t value = 0;
};

struct TokenFileHeader {
  static constexpr char kMagic[8] = {'C', 'O', 'A', 'T', 'T', 'O', 'K', '\0'};
  static constexpr uint32_t kVersion = 1;
  static constexpr size_t kBytes = 32;
  TokenWidth width = TokenWidth::U16;
  uint32_t vocab_size = 0;  // 0 when unknown
  uint64_t count = 0;
};

/// A read-only, memory-mapped view of a token file.
class TokenFile {
 public:
  /// Opens a file with our header; throws IoError naming the file and what is wrong (missing, not a
  /// token file, unknown version, truncated).
  static TokenFile open(const std::filesystem::path& path);
  /// Opens a headerless array of `width` tokens (native little-endian); its size must be a multiple of the
  /// width (IoError otherwise). `vocab_size` (0 = unknown) is recorded as the file's vocabulary; with
  /// `validate`, the whole file is scanned once and the first token >= vocab_size is reported (validate()).
  static TokenFile open_raw(const std::filesystem::path& path, TokenWidth width, uint32_t vocab_size = 0,
                            bool validate = false);

  uint64_t size() const { return count_; }
  TokenWidth width() const { return width_; }
  uint32_t vocab_size() const { return vocab_size_; }
  const std::filesystem::path& path() const { return path_; }
  uint32_t operator[](uint64_t i) const;
  /// Copies tokens [start, start + out.size()) into out; throws if the range is past the end or a token
  /// is >= vocab_limit (when vocab_limit > 0), naming the file and the position.
  void read(uint64_t start, std::span<int32_t> out, uint32_t vocab_limit = 0) const;

  /// Scans the whole file for the first token >= limit (limit 0: the file's vocab_size; InvalidArgument
  /// when both are 0). Sequential and memory-bound: about a second per few GB.
  std::optional<TokenOutOfRange> find_out_of_range(uint32_t limit = 0) const;
  /// find_out_of_range, throwing IoError that names the file, the position and the value of the first
  /// offending token.
  void validate(uint32_t limit = 0) const;

  /// The memory mapping shared by copies of this handle (opaque).
  struct Mapping;

 private:
  std::shared_ptr<Mapping> mapping_;
  const uint8_t* tokens_ = nullptr;
  uint64_t count_ = 0;
  TokenWidth width_ = TokenWidth::U16;
  uint32_t vocab_size_ = 0;
  std::filesystem::path path_;
};

/// Streams tokens into a token file: the header and tokens go to `<path>.tmp`; commit() writes the count,
/// syncs and renames the file into place. A writer destroyed without commit() (an exception on the way)
/// removes the temporary file, so the final path holds either the previous file or the complete new one.
class TokenFileWriter {
 public:
  /// Throws IoError when the temporary file cannot be created.
  TokenFileWriter(const std::filesystem::path& path, TokenWidth width, uint32_t vocab_size);
  ~TokenFileWriter();
  TokenFileWriter(const TokenFileWriter&) = delete;
  TokenFileWriter& operator=(const TokenFileWriter&) = delete;

  /// Appends tokens; throws InvalidArgument (with the token's position in the file) for a negative token
  /// or one that does not fit the width or the vocabulary (when vocab_size > 0); nothing of a rejected
  /// span is written.
  void append(std::span<const uint32_t> tokens);
  void append(std::span<const int32_t> tokens);
  /// Tokens appended so far.
  uint64_t count() const { return count_; }
  /// Finishes the file (header count, fsync, rename). Appending after commit() throws InvalidArgument.
  void commit();

 private:
  void check(uint64_t token, uint64_t index) const;
  void flush_buffer();
  std::filesystem::path path_, tmp_;
  TokenWidth width_;
  uint32_t vocab_size_;
  int fd_ = -1;
  uint64_t count_ = 0;
  std::vector<uint8_t> buffer_;
};

/// Writes tokens with a header, atomically (temporary file, then rename), so a failed write never leaves
/// a partial file under the final name. Throws if a token does not fit the width or the vocabulary.
void write_token_file(const std::filesystem::path& path, std::span<const uint32_t> tokens, TokenWidth width,
                      uint32_t vocab_size);

}  // namespace coat::data
