// Token files: a small header (magic, version, token width, vocabulary size, count) followed by the
// tokens, memory-mapped for reading. Headerless u16/u32 arrays (as OLMo and nanoGPT write them) are read
// by naming their width.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>

namespace coat::data {

enum class TokenWidth : uint8_t { U16 = 2, U32 = 4 };

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
  /// Opens a headerless array of `width` tokens; its size must be a multiple of the width.
  static TokenFile open_raw(const std::filesystem::path& path, TokenWidth width, uint32_t vocab_size = 0);

  uint64_t size() const { return count_; }
  TokenWidth width() const { return width_; }
  uint32_t vocab_size() const { return vocab_size_; }
  const std::filesystem::path& path() const { return path_; }
  uint32_t operator[](uint64_t i) const;
  /// Copies tokens [start, start + out.size()) into out; throws if the range is past the end or a token
  /// is >= vocab_limit (when vocab_limit > 0), naming the file and the position.
  void read(uint64_t start, std::span<int32_t> out, uint32_t vocab_limit = 0) const;

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

/// Writes tokens with a header, atomically (temporary file, then rename), so a failed write never leaves
/// a partial file under the final name. Throws if a token does not fit the width or the vocabulary.
void write_token_file(const std::filesystem::path& path, std::span<const uint32_t> tokens, TokenWidth width,
                      uint32_t vocab_size);

}  // namespace coat::data
