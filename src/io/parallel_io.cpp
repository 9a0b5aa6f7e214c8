// The I/O task pool (std::thread workers over one queue, failures ordered by task number), chunking and the
// chunked CRC-32C.
#include "coat/io/parallel_io.h"

#include <algorithm>

#include "coat/core/error.h"
#include "coat/io/checksum.h"

namespace coat::io {

int default_io_threads() {
  const int hardware = static_cast<int>(std::thread::hardware_concurrency());
  return std::min(8, std::max(1, hardware / 2));
}

void check_io_threads(int threads, const char* where) {
  COAT_ARG_CHECK(threads >= 1 && threads <= kMaxIoThreads, where, "io_threads ", threads,
                 " is out of range; expected 1 to ", kMaxIoThreads);
}

std::vector<ByteRange> split_bytes(uint64_t bytes, uint64_t chunk_bytes) {
  COAT_ARG_CHECK(chunk_bytes > 0, "split_bytes", "chunk size 0");
  std::vector<ByteRange> out;
  out.reserve(static_cast<size_t>((bytes + chunk_bytes - 1) / chunk_bytes));
  for (uint64_t at = 0; at < bytes; at += chunk_bytes) out.push_back({at, std::min(chunk_bytes, bytes - at)});
  return out;
}

TaskPool::TaskPool(int threads) : threads_(threads) {
  check_io_threads(threads, "TaskPool");
  if (threads == 1) return;
  try {
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { work(); });
  } catch (...) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    work_ready_.notify_all();
    for (std::thread& t : workers_) t.join();
    throw;
  }
}

TaskPool::~TaskPool() {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    pending_ -= queue_.size();  // skipped
    queue_.clear();
  }
  work_ready_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void TaskPool::run(size_t index, const std::function<void()>& task) noexcept {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (index > failed_index_) return;  // a sequential loop would have stopped before it
  }
  try {
    task();
  } catch (...) {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (index < failed_index_) {
      failed_index_ = index;
      failure_ = std::current_exception();
    }
  }
}

void TaskPool::work() {
  for (;;) {
    std::pair<size_t, std::function<void()>> item;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_ready_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    run(item.first, item.second);
    item.second = nullptr;  // release what the task held before it counts as finished
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      --pending_;
    }
    work_done_.notify_all();
  }
}

void TaskPool::submit(std::function<void()> task) {
  const size_t index = submitted_++;
  if (workers_.empty()) {
    run(index, task);
    return;
  }
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    ++pending_;
    queue_.emplace_back(index, std::move(task));
  }
  work_ready_.notify_one();
}

void TaskPool::wait_while_pending(size_t limit) {
  std::unique_lock<std::mutex> lock(mutex_);
  work_done_.wait(lock, [&] { return pending_ < std::max<size_t>(limit, 1); });
}

void TaskPool::wait() {
  std::unique_lock<std::mutex> lock(mutex_);
  work_done_.wait(lock, [&] { return pending_ == 0; });
  if (failure_) std::rethrow_exception(failure_);
}

bool TaskPool::failed() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return failure_ != nullptr;
}

void parallel_for(size_t count, int threads, const std::function<void(size_t)>& task) {
  check_io_threads(threads, "parallel_for");
  TaskPool pool(static_cast<int>(std::clamp<size_t>(count, 1, static_cast<size_t>(threads))));
  for (size_t i = 0; i < count && !pool.failed(); ++i) pool.submit([&task, i] { task(i); });
  pool.wait();
}

uint32_t parallel_crc32c(const void* data, uint64_t bytes, int threads,
                         const std::function<void(const ByteRange&)>& before) {
  const std::vector<ByteRange> chunks = split_bytes(bytes);
  std::vector<uint32_t> crcs(chunks.size());
  const auto* p = static_cast<const uint8_t*>(data);
  parallel_for(chunks.size(), threads, [&](size_t i) {
    if (before) before(chunks[i]);
    crcs[i] = crc32c(p + chunks[i].offset, chunks[i].bytes);
  });
  uint32_t crc = 0;
  for (size_t i = 0; i < chunks.size(); ++i) crc = crc32c_combine(crc, crcs[i], chunks[i].bytes);
  return crc;
}

}  // namespace coat::io
