// The I/O task pool: every task runs once, a failure is reported as a sequential loop would report it (the
// earliest failed task), later tasks are skipped; chunking; the chunked CRC-32C equals the one-pass CRC.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <random>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "coat/core/error.h"
#include "coat/io/checksum.h"
#include "coat/io/parallel_io.h"

namespace coat::io {
namespace {

TEST(ParallelIo, DefaultThreadsFollowTheHardware) {
  const int hardware = static_cast<int>(std::thread::hardware_concurrency());
  EXPECT_EQ(default_io_threads(), std::min(8, std::max(1, hardware / 2)));
  EXPECT_THROW(check_io_threads(0, "test"), InvalidArgument);
  EXPECT_THROW(check_io_threads(kMaxIoThreads + 1, "test"), InvalidArgument);
  EXPECT_NO_THROW(check_io_threads(1, "test"));
}

TEST(ParallelIo, SplitBytesCoversTheRangeInOrder) {
  EXPECT_TRUE(split_bytes(0, 10).empty());
  const std::vector<ByteRange> r = split_bytes(25, 10);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].offset, 0u);
  EXPECT_EQ(r[1].offset, 10u);
  EXPECT_EQ(r[2].offset, 20u);
  EXPECT_EQ(r[2].bytes, 5u);
  EXPECT_EQ(split_bytes(20, 10).size(), 2u);
}

TEST(ParallelIo, EveryTaskRunsOnceOnSeveralThreads) {
  for (int threads : {1, 2, 5}) {
    std::vector<std::atomic<int>> runs(1000);
    std::set<std::thread::id> ids;
    std::mutex ids_mutex;
    parallel_for(runs.size(), threads, [&](size_t i) {
      runs[i].fetch_add(1);
      const std::lock_guard<std::mutex> lock(ids_mutex);
      ids.insert(std::this_thread::get_id());
    });
    for (size_t i = 0; i < runs.size(); ++i) ASSERT_EQ(runs[i].load(), 1) << i << " with " << threads;
    if (threads == 1) {
      EXPECT_EQ(*ids.begin(), std::this_thread::get_id());  // inline: a plain loop
    }
    EXPECT_LE(ids.size(), static_cast<size_t>(threads));
  }
}

// Tasks 30 and 70 fail; 70 finishes first. The error is 30's: the one a sequential loop would have stopped at.
TEST(ParallelIo, TheEarliestFailureIsReported) {
  for (int threads : {1, 4}) {
    std::atomic<bool> seventy_failed{threads == 1};
    try {
      parallel_for(200, threads, [&](size_t i) {
        if (i == 70) {
          seventy_failed = true;
          throw IoError("task 70");
        }
        if (i == 30) {
          while (!seventy_failed) std::this_thread::yield();
          throw IoError("task 30");
        }
      });
      ADD_FAILURE() << "no exception with " << threads << " threads";
    } catch (const IoError& e) {
      EXPECT_STREQ(e.what(), "task 30") << threads << " threads";
    }
  }
}

// Once task 70's failure is recorded, the queued tasks after it are skipped. Every task after 70 waits until the
// pool reports the failure, so only the ones a worker had already taken off the queue (at most one per other
// worker) run; however the threads are scheduled, the other ~125 queued tasks must not.
TEST(ParallelIo, TasksQueuedBehindAFailureAreSkipped) {
  for (int threads : {2, 4}) {
    TaskPool pool(threads);
    std::atomic<int> ran_after{0};
    for (size_t i = 0; i < 200; ++i) {
      pool.submit([&, i] {
        if (i == 70) throw IoError("task 70");
        if (i < 70) return;
        while (!pool.failed()) std::this_thread::yield();
        ran_after.fetch_add(1);
      });
    }
    try {
      pool.wait();
      ADD_FAILURE() << "no exception with " << threads << " threads";
    } catch (const IoError& e) {
      EXPECT_STREQ(e.what(), "task 70") << threads << " threads";
    }
    EXPECT_LE(ran_after.load(), threads - 1) << threads << " threads";
  }
}

TEST(ParallelIo, PendingTasksAreBounded) {
  TaskPool pool(3);
  std::atomic<int> running{0}, most{0};
  for (int i = 0; i < 50; ++i) {
    pool.wait_while_pending(4);
    pool.submit([&] {
      const int now = running.fetch_add(1) + 1;
      int seen = most.load();
      while (now > seen && !most.compare_exchange_weak(seen, now)) {
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      running.fetch_sub(1);
    });
  }
  pool.wait();
  EXPECT_GE(most.load(), 2);  // several ran at once
  EXPECT_LE(most.load(), 3);
}

TEST(ParallelIo, ChunkedCrcEqualsTheOnePassCrc) {
  // Just over two chunks, of an odd length, so that three pieces (the last short) are combined.
  const size_t bytes = 2 * kIoChunkBytes + 12345;
  std::vector<uint64_t> words((bytes + 7) / 8);
  std::mt19937_64 gen(3);
  for (uint64_t& w : words) w = gen();
  const auto* data = reinterpret_cast<const uint8_t*>(words.data());
  const uint32_t expected = crc32c(data, bytes);
  for (int threads : {1, 3}) EXPECT_EQ(parallel_crc32c(data, bytes, threads), expected) << threads;
  EXPECT_EQ(parallel_crc32c(data, 0, 2), 0u);
}

}  // namespace
}  // namespace coat::io
