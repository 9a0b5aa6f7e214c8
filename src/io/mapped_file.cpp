// POSIX read-only mapping of a whole file; the mapping lives as long as any handle to it.
#include "coat/io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "coat/core/error.h"

namespace coat::io {

struct MappedFile::Mapping {
  void* base = nullptr;
  size_t bytes = 0;
  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (base != nullptr && base != MAP_FAILED) munmap(base, bytes);
  }
};

MappedFile MappedFile::open(const std::filesystem::path& path, const std::string& kind) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw IoError(detail::concat(kind, " ", path, ": cannot open (", std::strerror(errno), ")"));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw IoError(detail::concat(kind, " ", path, ": cannot stat (", std::strerror(err), ")"));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw IoError(detail::concat(kind, " ", path, ": not a regular file"));
  }
  MappedFile f;
  f.path_ = path;
  f.mapping_ = std::make_shared<Mapping>();
  f.mapping_->bytes = static_cast<size_t>(st.st_size);
  if (f.mapping_->bytes > 0) {
    void* base = mmap(nullptr, f.mapping_->bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    if (base == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw IoError(detail::concat(kind, " ", path, ": cannot map ", f.mapping_->bytes, " bytes (",
                                   std::strerror(err), ")"));
    }
    f.mapping_->base = base;
    f.data_ = static_cast<const uint8_t*>(base);
  }
  ::close(fd);
  f.size_ = f.mapping_->bytes;
  return f;
}

void MappedFile::will_need(uint64_t offset, uint64_t bytes) const {
  if (data_ == nullptr || offset >= size_ || bytes == 0) return;
  const auto page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const uint64_t begin = offset / page * page, end = std::min(size_, offset + bytes);
  (void)madvise(const_cast<uint8_t*>(data_) + begin, end - begin, MADV_WILLNEED);
}

}  // namespace coat::io
