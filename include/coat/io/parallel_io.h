// Parallel file I/O helpers for checkpoints: a small pool of std::threads whose failures are reported as a
// sequential run would report them (the failure of the earliest task), byte ranges cut into chunks, and the
// CRC-32C of a large buffer computed by chunks on several threads. One pool per call: a checkpoint is written
// every few minutes, so starting a handful of threads costs nothing next to the gigabytes they move.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace coat::io {

/// Tensors larger than this are written, read and checksummed in pieces of this size by several threads.
inline constexpr uint64_t kIoChunkBytes = uint64_t{64} << 20;
/// The largest io_threads accepted (checkpoint.io_threads).
inline constexpr int kMaxIoThreads = 256;

/// min(8, max(1, hardware threads / 2)): half the cores, leaving the rest to training (the save runs beside
/// it), and no more than a disk array needs to be kept busy.
int default_io_threads();
/// InvalidArgument "[<where>] io_threads ... " unless 1 <= threads <= kMaxIoThreads.
void check_io_threads(int threads, const char* where);

struct ByteRange {
  uint64_t offset = 0;
  uint64_t bytes = 0;
};
/// [0, bytes) cut into consecutive pieces of at most `chunk_bytes` (none when bytes is 0).
std::vector<ByteRange> split_bytes(uint64_t bytes, uint64_t chunk_bytes = kIoChunkBytes);

/// Runs submitted tasks on `threads` worker threads (threads == 1: on the submitting thread, at submission,
/// which is exactly a sequential loop). Tasks are numbered in submission order; once task i has failed, the
/// tasks after i that have not started are skipped, and wait() rethrows the failure of the earliest failed
/// task: the error a sequential loop would have stopped at. Not itself thread-safe: one thread submits.
class TaskPool {
 public:
  explicit TaskPool(int threads);
  /// Skips the tasks not yet started and joins the threads (never throws; call wait() to learn failures).
  ~TaskPool();
  TaskPool(const TaskPool&) = delete;
  TaskPool& operator=(const TaskPool&) = delete;

  void submit(std::function<void()> task);
  /// Blocks while `limit` or more submitted tasks have not finished: bounds what queued tasks hold.
  void wait_while_pending(size_t limit);
  /// Blocks until every submitted task finished or was skipped; rethrows the earliest failure.
  void wait();
  /// Whether a task has failed (the submitter may stop submitting).
  bool failed() const;
  int threads() const { return threads_; }

 private:
  void run(size_t index, const std::function<void()>& task) noexcept;
  void work();

  int threads_ = 1;
  mutable std::mutex mutex_;
  std::condition_variable work_ready_, work_done_;
  std::deque<std::pair<size_t, std::function<void()>>> queue_;
  size_t submitted_ = 0;
  size_t pending_ = 0;  ///< submitted and not finished
  size_t failed_index_ = SIZE_MAX;
  std::exception_ptr failure_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

/// task(0) ... task(count - 1) on up to `threads` threads; rethrows the failure of the earliest failed index.
void parallel_for(size_t count, int threads, const std::function<void(size_t)>& task);

/// CRC-32C of `bytes` bytes at `data`: kIoChunkBytes pieces checksummed on up to `threads` threads and
/// combined (crc32c_combine), equal to crc32c(data, bytes).
/// `before` (optional) runs on the piece's thread before its checksum (e.g. MappedFile::will_need).
uint32_t parallel_crc32c(const void* data, uint64_t bytes, int threads,
                         const std::function<void(const ByteRange&)>& before = {});

}  // namespace coat::io
