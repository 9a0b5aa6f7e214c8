// Token files: header parsing with clear errors, POSIX memory mapping, atomic writing.
#include "coat/data/token_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

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
                                 "data.token_dtype)"));
  }
  const uint32_t version = read_le<uint32_t>(bytes + 8);
  const uint32_t width = read_le<uint32_t>(bytes + 12);
  if (version != TokenFileHeader::kVersion) {
    throw IoError(detail::concat("token file ", path, ": format version ", version, ", this build reads version ",
                                 TokenFileHeader::kVersion));
  }
  if (width != 2 && width != 4) {
    throw IoError(detail::concat("token file ", path, ": token width ", width, " bytes, expected 2 or 4"));
  }
  f.width_ = static_cast<TokenWidth>(width);
  f.vocab_size_ = read_le<uint32_t>(bytes + 16);
  f.count_ = read_le<uint64_t>(bytes + 24);
  const uint64_t expected = TokenFileHeader::kBytes + f.count_ * width;
  if (size != expected) {
    throw IoError(detail::concat("token file ", path, ": header says ", f.count_, " tokens (", expected,
                                 " bytes) but the file has ", size, " bytes", size < expected ? " (truncated)" : ""));
  }
  f.tokens_ = bytes + TokenFileHeader::kBytes;
  return f;
}

TokenFile TokenFile::open_raw(const std::filesystem::path& path, TokenWidth width, uint32_t vocab_size) {
  TokenFile f;
  f.path_ = path;
  f.mapping_ = map_file(path);
  const size_t w = static_cast<size_t>(width);
  if (f.mapping_->bytes % w != 0) {
    throw IoError(detail::concat("token file ", path, ": ", f.mapping_->bytes, " bytes is not a multiple of the ",
                                 w, "-byte token width"));
  }
  f.width_ = width;
  f.vocab_size_ = vocab_size;
  f.count_ = f.mapping_->bytes / w;
  f.tokens_ = static_cast<const uint8_t*>(f.mapping_->base);
  return f;
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

void write_token_file(const std::filesystem::path& path, std::span<const uint32_t> tokens, TokenWidth width,
                      uint32_t vocab_size) {
  const uint64_t limit = width == TokenWidth::U16 ? 65536u : 4294967296ull;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] >= limit || (vocab_size > 0 && tokens[i] >= vocab_size)) {
      throw InvalidArgument(detail::concat("[write_token_file] token ", tokens[i], " at position ", i,
                                           " does not fit ", vocab_size > 0 ? "the vocabulary" : "the width",
                                           " (vocab_size ", vocab_size, ", width ", static_cast<int>(width),
                                           " bytes)"));
    }
  }
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw IoError(detail::concat("token file ", tmp, ": cannot create"));
    uint8_t header[TokenFileHeader::kBytes] = {};
    std::memcpy(header, TokenFileHeader::kMagic, 8);
    const uint32_t version = TokenFileHeader::kVersion, w = static_cast<uint32_t>(width);
    const uint64_t count = tokens.size();
    std::memcpy(header + 8, &version, 4);
    std::memcpy(header + 12, &w, 4);
    std::memcpy(header + 16, &vocab_size, 4);
    std::memcpy(header + 24, &count, 8);
    out.write(reinterpret_cast<const char*>(header), sizeof(header));
    if (width == TokenWidth::U32) {
      out.write(reinterpret_cast<const char*>(tokens.data()), static_cast<std::streamsize>(tokens.size() * 4));
    } else {
      std::vector<uint16_t> narrow(tokens.begin(), tokens.end());
      out.write(reinterpret_cast<const char*>(narrow.data()), static_cast<std::streamsize>(narrow.size() * 2));
    }
    out.flush();
    if (!out) throw IoError(detail::concat("token file ", tmp, ": write failed (disk full?)"));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw IoError(detail::concat("token file ", path, ": cannot rename from ", tmp, " (", ec.message(), ")"));
}

}  // namespace coat::data
