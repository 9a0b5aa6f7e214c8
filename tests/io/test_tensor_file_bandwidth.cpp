// Checkpoint file bandwidth (not run by ctest): writes a rank file of COAT_IO_BENCH_GIB GiB (default 2) of
// 128 MiB tensors into COAT_IO_BENCH_DIR (default the temp directory) with 1 and N threads, with and without
// write-back per piece, then reads it as a resume does: the whole file's CRC-32C (the check against COMPLETE)
// and a load (each tensor's checksum verified, its bytes copied into host tensors), warm (from the page
// cache) and cold (the file's pages dropped first), printing GB/s. Run:
//   COAT_IO_BENCH_GIB=2 build-cpu/tests/coat_test_io --gtest_also_run_disabled_tests
//       --gtest_filter='*DISABLED_WriteAndReadBandwidth'
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "io_test_util.h"

#include "coat/io/checkpoint_manifest.h"
#include "coat/io/tensor_file.h"

namespace coat::io {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Drops the file's (clean, synced) pages from the page cache so that the next read comes from the disk.
void drop_cached_pages(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

double load(const std::filesystem::path& path, std::vector<std::pair<std::string, Tensor>>& out,
            int threads) {
  const auto start = std::chrono::steady_clock::now();
  const TensorFileReader reader = TensorFileReader::open(path);
  std::vector<TensorSliceRead> reads;
  for (auto& [name, t] : out) reads.push_back({name, 0, t});
  reader.read_slices_into(reads, threads);
  return seconds_since(start);
}

double whole_file_crc(const std::filesystem::path& path, int threads) {
  const auto start = std::chrono::steady_clock::now();
  file_crc32c(path, threads);
  return seconds_since(start);
}

TEST(TensorFileBandwidth, DISABLED_WriteAndReadBandwidth) {
  const char* gib_env = std::getenv("COAT_IO_BENCH_GIB");
  const char* dir_env = std::getenv("COAT_IO_BENCH_DIR");
  const double gib = gib_env ? std::atof(gib_env) : 2.0;
  const std::filesystem::path dir =
      dir_env ? std::filesystem::path(dir_env) : std::filesystem::temp_directory_path();
  const auto path = dir / ("coat_io_bench_" + std::to_string(::getpid()) + ".bin");
  const ContextPtr ctx = std::make_shared<CpuContext>();
  const int64_t tensor_bytes = int64_t{128} << 20;
  const int count = std::max(1, static_cast<int>(gib * 1024 / 128));
  std::vector<std::pair<std::string, Tensor>> tensors, out;
  for (int i = 0; i < count; ++i) {
    tensors.emplace_back(
        "layers." + std::to_string(i) + ".master",
        test::random_bytes_tensor(ctx, {tensor_bytes / 4}, DType::F32, static_cast<uint32_t>(i)));
    out.emplace_back(tensors.back().first, Tensor::empty(ctx, {tensor_bytes / 4}, DType::F32));
    std::memset(out.back().second.data_ptr(), 0, static_cast<size_t>(tensor_bytes));  // faulted in here
  }
  const double bytes = static_cast<double>(tensor_bytes) * count;
  const int hardware = static_cast<int>(std::thread::hardware_concurrency());
  std::printf("%d hardware threads; %.2f GiB in %d tensors of 128 MiB; file %s\n", hardware,
              bytes / (1 << 30), count, path.c_str());
  const auto rate = [&](double s) { return bytes / s / 1e9; };
  std::vector<int> thread_counts = {1};
  for (int t : {default_io_threads(), hardware, 2 * hardware}) {
    if (t > thread_counts.back()) thread_counts.push_back(t);
  }
  const char* repeats_env = std::getenv("COAT_IO_BENCH_REPEATS");
  const int repeats = repeats_env ? std::max(1, std::atoi(repeats_env)) : 1;
  for (int repeat = 0; repeat < repeats; ++repeat) {
    for (bool write_back : {false, true}) {
      for (int threads : thread_counts) {
        TensorFileWriteOptions o;
        o.io_threads = threads;
        o.write_back = write_back;
        auto start = std::chrono::steady_clock::now();
        write_tensor_file(path, tensors, o);  // synced and renamed
        const double write_s = seconds_since(start);
        const double crc_warm_s = whole_file_crc(path, threads);
        drop_cached_pages(path);
        const double crc_cold_s = whole_file_crc(path, threads);
        const double load_warm_s = load(path, out, threads);
        drop_cached_pages(path);
        const double load_cold_s = load(path, out, threads);
        std::printf(
            "threads %d, write-back %-3s: write %.2f s (%.2f GB/s) | file CRC warm %.2f GB/s, cold %.2f GB/s"
            " | load (verify + copy) warm %.2f GB/s, cold %.2f GB/s\n",
            threads, write_back ? "on" : "off", write_s, rate(write_s), rate(crc_warm_s), rate(crc_cold_s),
            rate(load_warm_s), rate(load_cold_s));
        EXPECT_EQ(test::raw_bytes(out.back().second), test::raw_bytes(tensors.back().second));
      }
    }
  }
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace coat::io
