// Atomic file replacement: bytes go to `<target>.tmp.<pid>`, which is fsync'ed, renamed over the target
// and followed by an fsync of the directory. A reader of the target sees the old file or the complete new
// one, never a mixture; a write that fails (an exception, a full disk) removes its temporary file and
// leaves an existing target untouched.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string_view>
#include <vector>

namespace coat::io {

/// One atomic write in progress. Write the contents, then commit(); destroying it without commit()
/// discards the temporary file. Errors are IoError naming the file and the system's reason.
class AtomicFile {
 public:
  /// Creates (truncating) `<target>.tmp.<pid>` in the target's directory, which must exist.
  explicit AtomicFile(std::filesystem::path target);
  /// The same, but first takes `recycle` (an old file of the same file system that nobody needs any more,
  /// e.g. a pruned checkpoint's rank file) by renaming it to the temporary name, and overwrites it in place:
  /// its space is already the file's, so resize() reserves only what it lacks and the writes land in blocks
  /// (or tmpfs pages) that exist, without freeing the old file and allocating a new one. Its old bytes stay
  /// where nothing is written: the caller writes every byte up to the size it gives resize(). Where
  /// `recycle` is empty, missing or cannot be renamed, this is the constructor above. On failure the temporary
  /// file is removed as usual (the recycled file with it).
  AtomicFile(std::filesystem::path target, const std::filesystem::path& recycle);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  /// Appends bytes at the current position.
  void write(const void* data, size_t bytes);
  void write(std::string_view text) { write(text.data(), text.size()); }
  /// Appends zero bytes up to `offset` (no-op when already there; InvalidArgument when past it).
  void pad_to(uint64_t offset);
  /// Overwrites bytes at `offset` (which must be inside what was written or sized) without moving the
  /// position: for headers filled in after the data. Thread-safe (pwrite): several threads may write
  /// disjoint ranges of a file sized by resize() at once.
  void write_at(uint64_t offset, const void* data, size_t bytes);
  /// Reserves the disk space (fallocate, where the file system can; IoError "cannot reserve N bytes on the
  /// disk ..." with the OS error, e.g. ENOSPC, before anything is written), sets the file's size (new bytes
  /// read as zeros) and moves the position there: for writers that fill a file of known size by write_at
  /// from several threads. Never shrinks below the position (InvalidArgument); a recycled file longer than
  /// `bytes` is cut to it.
  void resize(uint64_t bytes);
  /// Bytes of a recycled file taken over at construction (0: a new file).
  uint64_t recycled_bytes() const { return recycled_bytes_; }
  /// Writes [offset, offset + bytes) back to the disk now (sync_file_range) and drops it from the page
  /// cache (posix_fadvise DONTNEED), so that a file of tens of GB does not fill the page cache with dirty
  /// pages before commit()'s fsync. No durability promise (commit still fsyncs); a write error the disk
  /// reports here is an IoError. Thread-safe.
  void write_back_and_drop(uint64_t offset, uint64_t bytes);
  /// Bytes written so far (the append position).
  uint64_t position() const { return position_; }

  /// fsync, close, rename over the target, fsync the directory. Once only.
  void commit();

  const std::filesystem::path& target() const { return target_; }
  const std::filesystem::path& temp_path() const { return temp_; }

 private:
  void check_open(const char* what) const;
  void discard() noexcept;

  std::filesystem::path target_;
  std::filesystem::path temp_;
  int fd_ = -1;
  uint64_t position_ = 0;
  uint64_t recycled_bytes_ = 0;  ///< the recycled file's size at construction
  uint64_t reserved_bytes_ = 0;  ///< [0, this) is known to be the file's space (a recycled file's length)
};

/// Runs `fill` on a fresh AtomicFile for `target` (recycling `recycle` where given, see AtomicFile) and
/// commits it. If fill throws, the temporary file is removed, the target is left as it was, and the
/// exception propagates.
void write_file_atomically(const std::filesystem::path& target, const std::function<void(AtomicFile&)>& fill,
                           const std::filesystem::path& recycle = {});
/// Atomically replaces `target` with `text` (JSON documents, markers).
void write_string_atomically(const std::filesystem::path& target, std::string_view text);
/// fsync of a directory, so that entries created, renamed or removed in it survive a crash.
void fsync_directory(const std::filesystem::path& dir);
/// Removes the temporary files `<target>.tmp.<pid>` that writers killed before their commit left (a kill -9
/// cannot run the cleanup); returns them. Only for a caller that is the target's one writer (under a lock):
/// another process's write in progress would be removed too. IoError naming the file when one cannot go.
std::vector<std::filesystem::path> remove_stale_temporaries(const std::filesystem::path& target);

}  // namespace coat::io
