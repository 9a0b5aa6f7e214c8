// Token files: header parsing with clear errors, POSIX memory mapping, validation scans, and streaming
// atomic writing.
#include "coat/data/token_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "coat/core/error.h"

namespace coat::data {

struct TokenFile::Mapping {
  void* base = nullptr;
  size_t bytes = 0;
  ~Mapping() {
    if (base != nullptr && base != MAP_FAILED) munmap(base, bytes);
  }
};

namespace {

std::shared_ptr<TokenFile::Mapping> map_file(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw IoError(detail::concat("token file ", path, ": cannot open (", std::strerror(errno), ")"));
  }
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw IoError(detail::concat("token file ", path, ": cannot stat (", std::strerror(err), ")"));
  }
  auto mapping = std::make_shared<TokenFile::Mapping>();
  mapping->bytes = static_cast<size_t>(st.st_size);
  if (mapping->bytes > 0) {
    mapping->base = mmap(nullptr, mapping->bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapping->base == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw IoError(detail::concat("token file ", path, ": cannot map (", std::strerror(err), ")"));
    }
  }
  ::close(fd);
  return mapping;
}

template <typename T>
T read_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

}  // namespace

TokenFile TokenFile::open(const std::filesystem::path& path) {
  TokenFile f;
  f.path_ = path;
  f.mapping_ = map_file(path);
  const auto* bytes = static_cast<const uint8_t*>(f.mapping_->base);
  const size_t size = f.mapping_->bytes;
  if (size < TokenFileHeader::kBytes || std::memcmp(bytes, TokenFileHeader::kMagic, 8) != 0) {
    throw IoError(detail::concat("token file ", path, ": not a coat token file (expected the 8-byte magic ",
                                 "'COATTOK' and a 32-byte header; for a headerless u16/u32 array set ",
                                 "data.format to \"u16\" or \"u32\", or pass --raw to coat-tokenize)"));
  }
  const uint32_t version = read_le<uint32_t>(bytes + 8);
  const uint32_t width = read_le<uint32_t>(bytes + 12);
  if (version != TokenFileHeader::kVersion) {
    throw IoError(detail::concat("token file ", path, ": format version ", version,
                                 ", this build reads version ", TokenFileHeader::kVersion));
  }
  if (width != 2 && width != 4) {
    throw IoError(detail::concat("token file ", path, ": token width ", width, " bytes, expected 2 or 4"));
  }
  f.width_ = static_cast<TokenWidth>(width);
  f.vocab_size_ = read_le<uint32_t>(bytes + 16);
  f.count_ = read_le<uint64_t>(bytes + 24);
  uint64_t expected = 0;
  if (__builtin_mul_overflow(f.count_, uint64_t{width}, &expected) ||
      __builtin_add_overflow(expected, uint64_t{TokenFileHeader::kBytes}, &expected)) {
    throw IoError(detail::concat("token file ", path, ": header says ", f.count_, " tokens of ", width,
                                 " bytes, more than 2^64 bytes (a damaged header); the file has ", size, " bytes"));
  }
  if (size != expected) {
    throw IoError(detail::concat("token file ", path, ": header says ", f.count_, " tokens (", expected,
                                 " bytes) but the file has ", size, " bytes",
                                 size < expected ? " (truncated)" : ""));
  }
  f.tokens_ = bytes + TokenFileHeader::kBytes;
  return f;
}

TokenFile TokenFile::open_raw(const std::filesystem::path& path, TokenWidth width, uint32_t vocab_size,
                              bool validate) {
  if (width != TokenWidth::U16 && width != TokenWidth::U32) {
    throw InvalidArgument(detail::concat("token file ", path, ": token width ", static_cast<int>(width),
                                         " bytes, expected 2 (u16) or 4 (u32)"));
  }
  TokenFile f;
  f.path_ = path;
  f.mapping_ = map_file(path);
  const size_t w = static_cast<size_t>(width);
  if (f.mapping_->bytes % w != 0) {
    throw IoError(detail::concat("token file ", path, ": ", f.mapping_->bytes,
                                 " bytes is not a multiple of the ", w, "-byte token width (u", 8 * w,
                                 "); a truncated file, or the wrong dtype?"));
  }
  f.width_ = width;
  f.vocab_size_ = vocab_size;
  f.count_ = f.mapping_->bytes / w;
  f.tokens_ = static_cast<const uint8_t*>(f.mapping_->base);
  if (validate) f.validate();
  return f;
}

namespace {

// Block maxima (a loop the compiler vectorises), then a search inside the first block that fails.
template <typename T>
std::optional<TokenOutOfRange> scan(const uint8_t* tokens, uint64_t count, uint32_t limit) {
  constexpr uint64_t kBlock = 1 << 14;
  for (uint64_t start = 0; start < count; start += kBlock) {
    const uint64_t n = std::min(kBlock, count - start);
    const uint8_t* block = tokens + start * sizeof(T);
    T top = 0;
    for (uint64_t i = 0; i < n; ++i) top = std::max(top, read_le<T>(block + i * sizeof(T)));
    if (top < limit) continue;
    for (uint64_t i = 0; i < n; ++i) {
      const T v = read_le<T>(block + i * sizeof(T));
      if (v >= limit) return TokenOutOfRange{start + i, static_cast<uint32_t>(v)};
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<TokenOutOfRange> TokenFile::find_out_of_range(uint32_t limit) const {
  if (limit == 0) limit = vocab_size_;
  if (limit == 0) {
    throw InvalidArgument(detail::concat("token file ", path_,
                                         ": cannot check token ids without a vocabulary size (the file ",
                                         "records none; pass one)"));
  }
  if (width_ == TokenWidth::U16) {
    if (limit > 0xFFFF) return std::nullopt;
    return scan<uint16_t>(tokens_, count_, limit);
  }
  return scan<uint32_t>(tokens_, count_, limit);
}

void TokenFile::validate(uint32_t limit) const {
  if (limit == 0) limit = vocab_size_;
  if (const auto bad = find_out_of_range(limit)) {
    throw IoError(detail::concat("token file ", path_, ": token ", bad->value, " at position ", bad->position,
                                 " is past the vocabulary (vocab_size ", limit, "; ", count_,
                                 " tokens in the file)"));
  }
}

uint32_t TokenFile::operator[](uint64_t i) const {
  return width_ == TokenWidth::U16 ? read_le<uint16_t>(tokens_ + 2 * i) : read_le<uint32_t>(tokens_ + 4 * i);
}

void TokenFile::read(uint64_t start, std::span<int32_t> out, uint32_t vocab_limit) const {
  if (start > count_ || out.size() > count_ - start) {
    throw IoError(detail::concat("token file ", path_, ": read of ", out.size(), " tokens at ", start,
                                 " is past its end (", count_, " tokens)"));
  }
  for (size_t i = 0; i < out.size(); ++i) {
    const uint32_t token = (*this)[start + i];
    if (vocab_limit > 0 && token >= vocab_limit) {
      throw IoError(detail::concat("token file ", path_, ": token ", token, " at position ", start + i,
                                   " is past the model's vocabulary (vocab_size ", vocab_limit, ")"));
    }
    out[i] = static_cast<int32_t>(token);
  }
}

TokenWidth parse_token_width(const std::string& name) {
  if (name == "u16" || name == "uint16") return TokenWidth::U16;
  if (name == "u32" || name == "uint32") return TokenWidth::U32;
  throw InvalidArgument(detail::concat("token dtype '", name, "': expected u16 or u32"));
}

TokenWidth token_width_for_vocab(uint64_t vocab_size) {
  return vocab_size <= 65536 ? TokenWidth::U16 : TokenWidth::U32;
}

namespace {

constexpr size_t kWriteBuffer = 1 << 20;

void write_all(int fd, const uint8_t* data, size_t n, const std::filesystem::path& path) {
  while (n > 0) {
    const ssize_t done = ::write(fd, data, n);
    if (done < 0 && errno == EINTR) continue;
    if (done <= 0) {
      throw IoError(detail::concat("token file ", path, ": write failed (", std::strerror(errno), ")"));
    }
    data += done;
    n -= static_cast<size_t>(done);
  }
}

}  // namespace

TokenFileWriter::TokenFileWriter(const std::filesystem::path& path, TokenWidth width, uint32_t vocab_size)
    : path_(path), tmp_(path), width_(width), vocab_size_(vocab_size) {
  if (width != TokenWidth::U16 && width != TokenWidth::U32) {
    throw InvalidArgument(detail::concat("[TokenFileWriter] ", path, ": token width ",
                                         static_cast<int>(width), " bytes, expected 2 or 4"));
  }
  if (width == TokenWidth::U16 && vocab_size > 65536) {
    throw InvalidArgument(detail::concat("[TokenFileWriter] ", path, ": a vocabulary of ", vocab_size,
                                         " tokens does not fit u16 tokens; use u32"));
  }
  tmp_ += ".tmp";
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    throw IoError(detail::concat("token file ", tmp_, ": cannot create (", std::strerror(errno), ")"));
  }
  buffer_.reserve(kWriteBuffer);
  buffer_.resize(TokenFileHeader::kBytes);  // the header, written for real by commit()
}

TokenFileWriter::~TokenFileWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    std::error_code ec;
    std::filesystem::remove(tmp_, ec);
  }
}

void TokenFileWriter::check(uint64_t token, uint64_t index) const {
  const uint64_t limit = width_ == TokenWidth::U16 ? 65536u : 4294967296ull;
  if (token >= limit || (vocab_size_ > 0 && token >= vocab_size_)) {
    throw InvalidArgument(detail::concat("[write_token_file] token ", token, " at position ", index,
                                         " does not fit ", vocab_size_ > 0 ? "the vocabulary" : "the width",
                                         " (vocab_size ", vocab_size_, ", width ", static_cast<int>(width_),
                                         " bytes) of ", path_));
  }
}

void TokenFileWriter::flush_buffer() {
  write_all(fd_, buffer_.data(), buffer_.size(), tmp_);
  buffer_.clear();
}

void TokenFileWriter::append(std::span<const uint32_t> tokens) {
  if (fd_ < 0) throw InvalidArgument(detail::concat("[TokenFileWriter] ", path_, ": append after commit"));
  for (size_t i = 0; i < tokens.size(); ++i) check(tokens[i], count_ + i);
  const size_t w = static_cast<size_t>(width_);
  for (const uint32_t token : tokens) {
    if (buffer_.size() + w > kWriteBuffer) flush_buffer();
    uint8_t bytes[4];
    if (width_ == TokenWidth::U16) {
      const auto narrow = static_cast<uint16_t>(token);
      std::memcpy(bytes, &narrow, 2);
    } else {
      std::memcpy(bytes, &token, 4);
    }
    buffer_.insert(buffer_.end(), bytes, bytes + w);
  }
  count_ += tokens.size();
}

void TokenFileWriter::append(std::span<const int32_t> tokens) {
  if (fd_ < 0) throw InvalidArgument(detail::concat("[TokenFileWriter] ", path_, ": append after commit"));
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0) {
      throw InvalidArgument(detail::concat("[write_token_file] token ", tokens[i], " at position ",
                                           count_ + i, " is negative (", path_, ")"));
    }
  }
  static_assert(sizeof(int32_t) == sizeof(uint32_t));
  append(std::span<const uint32_t>(reinterpret_cast<const uint32_t*>(tokens.data()), tokens.size()));
}

void TokenFileWriter::commit() {
  if (fd_ < 0) throw InvalidArgument(detail::concat("[TokenFileWriter] ", path_, ": commit twice"));
  flush_buffer();
  uint8_t header[TokenFileHeader::kBytes] = {};
  std::memcpy(header, TokenFileHeader::kMagic, 8);
  const uint32_t version = TokenFileHeader::kVersion, w = static_cast<uint32_t>(width_);
  std::memcpy(header + 8, &version, 4);
  std::memcpy(header + 12, &w, 4);
  std::memcpy(header + 16, &vocab_size_, 4);
  std::memcpy(header + 24, &count_, 8);
  if (::pwrite(fd_, header, sizeof(header), 0) != static_cast<ssize_t>(sizeof(header)) || ::fsync(fd_) != 0) {
    throw IoError(detail::concat("token file ", tmp_, ": write failed (", std::strerror(errno), ")"));
  }
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const int err = errno;
    std::error_code ec;
    std::filesystem::remove(tmp_, ec);
    throw IoError(detail::concat("token file ", tmp_, ": close failed (", std::strerror(err), ")"));
  }
  std::error_code ec;
  std::filesystem::rename(tmp_, path_, ec);
  if (ec) {
    std::error_code ignored;
    std::filesystem::remove(tmp_, ignored);
    throw IoError(
        detail::concat("token file ", path_, ": cannot rename from ", tmp_, " (", ec.message(), ")"));
  }
}

void write_token_file(const std::filesystem::path& path, std::span<const uint32_t> tokens, TokenWidth width,
                      uint32_t vocab_size) {
  // Check everything before creating the temporary file: a rejected write touches nothing.
  const uint64_t limit = width == TokenWidth::U16 ? 65536u : 4294967296ull;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] >= limit || (vocab_size > 0 && tokens[i] >= vocab_size)) {
      throw InvalidArgument(detail::concat("[write_token_file] token ", tokens[i], " at position ", i,
                                           " does not fit ", vocab_size > 0 ? "the vocabulary" : "the width",
                                           " (vocab_size ", vocab_size, ", width ", static_cast<int>(width),
                                           " bytes)"));
    }
  }
  TokenFileWriter writer(path, width, vocab_size);
  writer.append(tokens);
  writer.commit();
}

}  // namespace coat::data
