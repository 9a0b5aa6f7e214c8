// Tensor files written and read on several threads: the bytes do not depend on the thread count or the piece
// size, random tensors (empty ones, ones of many pieces, strided ones) round-trip through the batch reads, a
// flipped byte is named as the sequential reader names it, and a write that fails on a worker leaves no
// temporary file and the old target as it was.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>

#include <random>

#include "expect_error.h"
#include "io_test_util.h"

#include "coat/core/error.h"
#include "coat/core/storage.h"
#include "coat/io/checksum.h"
#include "coat/io/tensor_bytes.h"
#include "coat/io/tensor_file.h"
#include "coat/ops/creation.h"

namespace coat::io {
namespace {

using coat::test::expect_error_containing;
using Named = std::vector<std::pair<std::string, Tensor>>;

class TensorFileParallelTest : public test::TempDirTest {
 protected:
  ContextPtr ctx_ = std::make_shared<CpuContext>();

  // Random dtypes and shapes: empty tensors, scalars, tensors of up to ~12 pieces of 4 KiB, a transposed
  // view.
  Named random_tensors(uint32_t seed) const {
    std::mt19937 gen(seed);
    const DType dtypes[] = {DType::F32, DType::BF16, DType::E4M3, DType::U8, DType::I64};
    Named out;
    for (int i = 0; i < 24; ++i) {
      const DType dtype = dtypes[gen() % std::size(dtypes)];
      Shape shape;
      switch (i % 4) {
        case 0:
          shape = {static_cast<int64_t>(gen() % 3), 5};
          break;  // sometimes empty
        case 1:
          shape = {};
          break;
        default:
          shape = {static_cast<int64_t>(1 + gen() % 97), static_cast<int64_t>(1 + gen() % 131)};
      }
      std::string name = "t";
      name += std::to_string(i);
      out.emplace_back(name, test::random_bytes_tensor(ctx_, shape, dtype, seed * 100 + i));
    }
    out.emplace_back("strided", test::random_bytes_tensor(ctx_, {40, 70}, DType::BF16, seed).transpose(0, 1));
    return out;
  }

  static TensorFileWriteOptions options(int threads, uint64_t chunk_bytes) {
    TensorFileWriteOptions o;
    o.io_threads = threads;
    o.chunk_bytes = chunk_bytes;
    return o;
  }
};

TEST_F(TensorFileParallelTest, BytesDoNotDependOnThreadsOrPieces) {
  const Named tensors = random_tensors(1);
  const TensorFileSummary one = write_tensor_file(dir_ / "one.bin", tensors, options(1, kIoChunkBytes));
  const std::vector<uint8_t> expected = test::read_file_bytes(dir_ / "one.bin");
  EXPECT_EQ(one.bytes, expected.size());
  EXPECT_EQ(one.crc32c, crc32c(expected.data(), expected.size()));
  for (const auto& [threads, chunk] :
       {std::pair{4, uint64_t{4096}}, {3, uint64_t{1000}}, {2, uint64_t{97}}}) {
    const auto path = dir_ / ("t" + std::to_string(threads) + ".bin");
    const TensorFileSummary s = write_tensor_file(path, tensors, options(threads, chunk));
    EXPECT_EQ(test::read_file_bytes(path), expected) << threads << " threads, pieces of " << chunk;
    EXPECT_EQ(s.bytes, one.bytes);
    EXPECT_EQ(s.crc32c, one.crc32c);
  }
}

TEST_F(TensorFileParallelTest, RandomTensorsRoundTripThroughBatchReads) {
  const Named tensors = random_tensors(2);
  const auto path = dir_ / "r.bin";
  write_tensor_file(path, tensors, options(3, 4096));
  for (int threads : {1, 3}) {
    const TensorFileReader reader = TensorFileReader::open(path);
    std::mt19937 gen(threads);
    std::vector<TensorSliceRead> reads;
    std::vector<Tensor> expected;
    for (const auto& [name, t] : tensors) {
      const Tensor source = host_contiguous(t, ctx_);
      const int64_t n = source.numel(), offset = n ? static_cast<int64_t>(gen() % n) : 0;
      const int64_t count = n - offset - (n - offset > 1 ? static_cast<int64_t>(gen() % (n - offset)) : 0);
      reads.push_back({name, offset, Tensor::empty(ctx_, {count}, t.dtype())});
      expected.push_back(source.reshape({n}).slice(0, offset, offset + count));
    }
    // A strided destination goes through the calling thread's path.
    Tensor strided = ops::zeros(ctx_, {70, 40}, DType::BF16).transpose(0, 1);
    reads.push_back({"strided", 0, strided});
    reader.read_slices_into(reads, threads);
    for (size_t i = 0; i < expected.size(); ++i)
      EXPECT_EQ(test::raw_bytes(reads[i].dst), test::raw_bytes(host_contiguous(expected[i], ctx_)))
          << reads[i].name << " with " << threads << " threads";
    EXPECT_EQ(test::raw_bytes(host_contiguous(strided, ctx_)),
              test::raw_bytes(host_contiguous(tensors.back().second, ctx_)));
    EXPECT_NO_THROW(reader.verify_all(threads));
  }
}

// Over kIoChunkBytes: several pieces of the default size, written and verified on two threads.
TEST_F(TensorFileParallelTest, TensorLargerThanOnePieceRoundTrips) {
  const Tensor big = test::random_bytes_tensor(ctx_, {static_cast<int64_t>(kIoChunkBytes) + 5}, DType::U8, 9);
  const auto path = dir_ / "big.bin";
  const TensorFileSummary s = write_tensor_file(
      path, {{"small", ops::arange(ctx_, 3, DType::F32)}, {"big", big}}, options(2, kIoChunkBytes));
  const TensorFileReader reader = TensorFileReader::open(path);
  EXPECT_EQ(reader.entry("big").crc32c, crc32c(big.data_ptr(), big.nbytes()));
  const std::vector<uint8_t> file = test::read_file_bytes(path);
  EXPECT_EQ(s.bytes, file.size());
  EXPECT_EQ(s.crc32c, crc32c(file.data(), file.size()));
  reader.verify_all(2);
  Tensor back = Tensor::empty(ctx_, big.shape(), DType::U8);
  reader.read_slices_into({{"big", 0, back}}, 2);
  EXPECT_EQ(test::raw_bytes(back), test::raw_bytes(big));
}

TEST_F(TensorFileParallelTest, FlippedByteIsNamedAsTheSequentialReaderNamesIt) {
  Named tensors = random_tensors(3);
  const std::string name = "model.layers.0.mlp.up_proj.weight";
  tensors.emplace_back(name, test::random_bytes_tensor(ctx_, {50, 300}, DType::F32, 33));  // 15 pieces
  tensors.emplace_back("healthy", ops::arange(ctx_, 16, DType::F32));
  const auto path = dir_ / "rank_00000.bin";
  write_tensor_file(path, tensors, options(4, 4096));
  std::vector<uint8_t> bytes = test::read_file_bytes(path);
  const TensorFileEntry damaged = TensorFileReader::open(path).entry(name);
  bytes[damaged.offset + damaged.bytes / 2 + 3] ^= 0x40;  // in a middle piece
  test::write_file_bytes(path, bytes);

  std::string sequential;
  try {
    TensorFileReader::open(path).verify(name);
  } catch (const IoError& e) {
    sequential = e.what();
  }
  ASSERT_NE(sequential.find("checksum mismatch in tensor '" + name + "'"), std::string::npos) << sequential;
  ASSERT_NE(sequential.find("rank_00000.bin"), std::string::npos) << sequential;
  for (int threads : {1, 4}) {
    const TensorFileReader reader = TensorFileReader::open(path);
    expect_error_containing([&] { reader.verify_all(threads); }, sequential);
    Tensor untouched = ops::full(ctx_, {16}, 3.0, DType::F32);
    const std::vector<TensorSliceRead> reads = {{"healthy", 0, untouched},
                                                {name, 0, Tensor::empty(ctx_, {15000}, DType::F32)}};
    expect_error_containing([&] { reader.read_slices_into(reads, threads); }, sequential);
    EXPECT_EQ(untouched.data<float>()[5], 3.0f);  // nothing is copied before every checksum matched
  }
}

TEST_F(TensorFileParallelTest, TwoDamagedTensorsNameTheFirstInRequestOrder) {
  const Named tensors = random_tensors(4);
  const auto path = dir_ / "d.bin";
  write_tensor_file(path, tensors, options(2, 4096));
  std::vector<uint8_t> bytes = test::read_file_bytes(path);
  const TensorFileReader before = TensorFileReader::open(path);
  for (const char* name : {"t2", "t7"}) bytes[before.entry(name).offset] ^= 0x01;
  test::write_file_bytes(path, bytes);
  const TensorFileReader reader = TensorFileReader::open(path);
  const auto read_of = [&](const char* name, size_t i) {
    return TensorSliceRead{name, 0,
                           Tensor::empty(ctx_, {tensors[i].second.numel()}, tensors[i].second.dtype())};
  };
  expect_error_containing(
      [&] {
        reader.read_slices_into({read_of("t7", 7), read_of("t2", 2)}, 4);
      },
      "checksum mismatch in tensor 't7'");
  expect_error_containing([&] { reader.verify_all(4); }, "checksum mismatch in tensor 't2'");  // file order
}

// Memory whose second page onwards the kernel cannot read: pwrite of those pieces fails with EFAULT on a
// worker thread, after the earlier pieces were written.
struct UnreadableTail {
  size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  size_t bytes = 4 * page;
  void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  Tensor tensor(const ContextPtr& ctx) const {
    std::memset(base, 0x5A, page);
    ::mprotect(static_cast<uint8_t*>(base) + page, bytes - page, PROT_NONE);
    const size_t size = bytes;
    auto storage = std::make_shared<Storage>(ctx, base, bytes, [size](void* p) { ::munmap(p, size); });
    return Tensor::from_storage(storage, {static_cast<int64_t>(bytes)}, DType::U8);
  }
};

TEST_F(TensorFileParallelTest, FailedWriteOnAWorkerLeavesTheOldFileAndNoTemporary) {
  const auto path = dir_ / "rank_00000.bin";
  write_tensor_file(path, {{"old", ops::arange(ctx_, 8, DType::F32)}}, options(1, kIoChunkBytes));
  const std::vector<uint8_t> old_bytes = test::read_file_bytes(path);
  for (int threads : {1, 3}) {
    UnreadableTail tail;
    ASSERT_NE(tail.base, MAP_FAILED);
    Named tensors = random_tensors(5);
    tensors.insert(tensors.begin() + 10, {"model.layers.3.unreadable", tail.tensor(ctx_)});
    try {
      write_tensor_file(path, tensors, options(threads, tail.page));
      ADD_FAILURE() << "the write did not fail with " << threads << " threads";
    } catch (const IoError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("rank_00000.bin"), std::string::npos) << what;
      EXPECT_NE(what.find("tensor 'model.layers.3.unreadable'"), std::string::npos) << what;
      EXPECT_NE(what.find("Bad address"), std::string::npos) << what;
    }
    EXPECT_EQ(test::read_file_bytes(path), old_bytes) << threads << " threads";
    EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_), {}), 1) << "a temporary file is left";
  }
}

/// A file-size limit for this process (RLIMIT_FSIZE), SIGXFSZ ignored, both restored at the end of the scope:
/// a disk with room for `bytes` more bytes only, as far as this process's files go.
struct FileSizeLimit {
  rlimit old{};
  void (*old_handler)(int) = SIG_DFL;
  explicit FileSizeLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &old);
    old_handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit limit = old;
    limit.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &limit);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &old);
    std::signal(SIGXFSZ, old_handler);
  }
};

// A rank file larger than the room left fails when its space is reserved, before any data is written: an
// IoError naming the file and the size it needed, the old file as it was, no temporary file.
TEST_F(TensorFileParallelTest, NoRoomForTheFileFailsBeforeAnyDataIsWritten) {
  {  // Where the file system cannot reserve space, a full disk shows at a write instead (another test).
    const int fd = ::open((dir_ / "probe").c_str(), O_CREAT | O_WRONLY, 0644);
    ASSERT_GE(fd, 0);
    const bool reserves = ::fallocate(fd, 0, 0, 4096) == 0 || (errno != EOPNOTSUPP && errno != ENOSYS);
    ::close(fd);
    std::filesystem::remove(dir_ / "probe");
    if (!reserves) GTEST_SKIP() << "the file system of " << dir_ << " cannot reserve space (fallocate)";
  }
  const auto path = dir_ / "rank_00000.bin";
  write_tensor_file(path, {{"old", ops::arange(ctx_, 8, DType::F32)}}, options(1, kIoChunkBytes));
  const std::vector<uint8_t> old_bytes = test::read_file_bytes(path);
  const Tensor big = test::random_bytes_tensor(ctx_, {int64_t{4} << 20}, DType::U8, 9);
  {
    const FileSizeLimit limit(1 << 20);
    try {
      write_tensor_file(path, {{"big", big}}, options(2, 1 << 16));
      ADD_FAILURE() << "a 4 MiB file was written under a 1 MiB limit";
    } catch (const IoError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("cannot reserve"), std::string::npos) << what;
      EXPECT_NE(what.find("rank_00000.bin"), std::string::npos) << what;
      EXPECT_NE(what.find("File too large"), std::string::npos) << what;
    }
  }
  EXPECT_EQ(test::read_file_bytes(path), old_bytes);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_), {}), 1) << "a temporary file is left";
}

TEST_F(TensorFileParallelTest, MissingDirectoryIsAnIoErrorNamingThePath) {
  const auto path = dir_ / "no" / "such" / "rank_00000.bin";
  expect_error_containing([&] { write_tensor_file(path, random_tensors(6), options(4, 4096)); },
                          "no/such/rank_00000.bin");
  EXPECT_FALSE(std::filesystem::exists(dir_ / "no"));
}

TEST_F(TensorFileParallelTest, WriteBackAndDropWritesTheSameBytes) {
  const Named tensors = random_tensors(7);
  write_tensor_file(dir_ / "a.bin", tensors, options(1, kIoChunkBytes));
  TensorFileWriteOptions o = options(3, 4096);
  o.write_back = true;
  write_tensor_file(dir_ / "b.bin", tensors, o);
  EXPECT_EQ(test::read_file_bytes(dir_ / "b.bin"), test::read_file_bytes(dir_ / "a.bin"));
}

TEST_F(TensorFileParallelTest, BadThreadCountsAreRejected) {
  expect_error_containing([&] { write_tensor_file(dir_ / "x.bin", {}, options(0, 4096)); }, "io_threads 0");
  write_tensor_file(dir_ / "x.bin", {}, options(1, 4096));
  expect_error_containing([&] { TensorFileReader::open(dir_ / "x.bin").verify_all(-1); }, "io_threads -1");
  EXPECT_FALSE(std::filesystem::exists(dir_ / ("x.bin.tmp." + std::to_string(::getpid()))));
}

}  // namespace
}  // namespace coat::io
