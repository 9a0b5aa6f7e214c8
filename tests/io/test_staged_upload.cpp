// upload_staged: every byte of every upload arrives, whatever the chunk size (tiny chunks make many buffer
// swaps, chunks past an upload's end, uploads of one element), thread count and dtype; the read-ahead hook
// sees every source byte once; a failing fill is rethrown and the failure of the earliest chunk wins; bad
// arguments are named. On a CUDA device the same through pinned buffers, and a tensor file's batch read into
// device slices.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <random>

#include "expect_error.h"
#include "io_test_util.h"

#include "coat/core/error.h"
#include "coat/io/staged_upload.h"
#include "coat/io/tensor_bytes.h"
#include "coat/io/tensor_file.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/runtime.h"

namespace coat::io {
namespace {

using coat::test::expect_error_containing;

class StagedUploadTest : public test::TempDirTest {
 protected:
  ContextPtr ctx_ = std::make_shared<CpuContext>();

  // Sources of random bytes and destinations of zeros on `dst_ctx`, of several dtypes and odd sizes.
  void make(const ContextPtr& dst_ctx, uint32_t seed) {
    std::mt19937 gen(seed);
    const DType dtypes[] = {DType::F32, DType::BF16, DType::E4M3, DType::I64, DType::U8};
    for (int i = 0; i < 9; ++i) {
      const DType dtype = dtypes[gen() % std::size(dtypes)];
      const int64_t n = i == 0 ? 1 : i == 1 ? 0 : static_cast<int64_t>(1 + gen() % 700);
      sources_.push_back(test::random_bytes_tensor(ctx_, {n}, dtype, seed * 10 + static_cast<uint32_t>(i)));
      Tensor zero = ops::zeros(ctx_, {n}, dtype);
      dsts_.push_back(dst_ctx->device().is_cpu() ? zero : ops::to(zero, dst_ctx));
    }
  }
  std::vector<StagedUpload> uploads() const {
    std::vector<StagedUpload> out;
    for (size_t k = 0; k < sources_.size(); ++k)
      out.push_back({static_cast<const uint8_t*>(sources_[k].data_ptr()), dsts_[k]});
    return out;
  }
  void expect_arrived() const {
    for (size_t k = 0; k < sources_.size(); ++k)
      EXPECT_EQ(test::raw_bytes(host_contiguous(dsts_[k], ctx_)), test::raw_bytes(sources_[k])) << "upload " << k;
  }
  std::vector<Tensor> sources_, dsts_;
};

TEST_F(StagedUploadTest, EveryByteArrivesForAnyChunkAndThreadCount) {
  for (const uint64_t chunk : {uint64_t{8}, uint64_t{24}, uint64_t{512}, uint64_t{1} << 20}) {
    for (const int threads : {1, 3}) {
      sources_.clear();
      dsts_.clear();
      make(ctx_, static_cast<uint32_t>(chunk) + static_cast<uint32_t>(threads));
      std::mutex mutex;
      std::map<const uint8_t*, uint64_t> seen;  // piece start -> bytes
      upload_staged(uploads(), threads, [&](const uint8_t* from, uint64_t bytes) {
        std::lock_guard<std::mutex> lock(mutex);
        seen[from] += bytes;
      }, chunk);
      expect_arrived();
      uint64_t hooked = 0, total = 0;
      for (const auto& [from, bytes] : seen) hooked += bytes;
      for (const Tensor& s : sources_) total += s.nbytes();
      EXPECT_EQ(hooked, total) << "chunk " << chunk << ", threads " << threads;
    }
  }
}

TEST_F(StagedUploadTest, EarliestFailingFillIsRethrown) {
  make(ctx_, 4);
  const uint8_t* second = static_cast<const uint8_t*>(sources_[2].data_ptr());
  const uint8_t* third = static_cast<const uint8_t*>(sources_[3].data_ptr());
  for (const int threads : {1, 4}) {
    expect_error_containing(
        [&] {
          upload_staged(uploads(), threads, [&](const uint8_t* from, uint64_t) {
            if (from == second) throw IoError("read of upload 2 failed");
            if (from == third) throw IoError("read of upload 3 failed");
          }, 64);
        },
        "read of upload 2 failed");
  }
}

TEST_F(StagedUploadTest, BadArgumentsAreNamed) {
  make(ctx_, 5);
  expect_error_containing([&] { upload_staged(uploads(), 2, {}, 12); }, "multiple of 8");
  expect_error_containing([&] { upload_staged(uploads(), 0); }, "io_threads");
  Tensor matrix = ops::zeros(ctx_, {4, 6}, DType::F32);
  const Tensor source = test::random_bytes_tensor(ctx_, {6, 4}, DType::F32, 1);
  expect_error_containing(
      [&] { upload_staged({{static_cast<const uint8_t*>(source.data_ptr()), matrix.transpose(0, 1)}}, 2); },
      "destination 0 is undefined or not contiguous");
  upload_staged({}, 2);  // nothing to do
}

TEST_F(StagedUploadTest, CudaDestinationsThroughPinnedBuffers) {
  if (ops::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const ContextPtr gpu = ops::make_context(Device::cuda(0));
  make(gpu, 6);
  upload_staged(uploads(), 3, {}, 256);
  expect_arrived();
  // Many chunks of the default size: 200 MB, the 64 MiB buffers swapped three times.
  const Tensor big = test::random_bytes_tensor(ctx_, {50'000'000}, DType::F32, 9);
  Tensor on_gpu = ops::to(ops::zeros(ctx_, {50'000'000}, DType::F32), gpu);
  upload_staged({{static_cast<const uint8_t*>(big.data_ptr()), on_gpu}}, 4);
  EXPECT_EQ(test::raw_bytes(host_contiguous(on_gpu, ctx_)), test::raw_bytes(big));
}

// A batch of slices read into `on`'s memory: contiguous slices (staged), a strided view (one by one) and a
// host tensor (the pool), all in one read_slices_into.
void batch_read_into_slices(const ContextPtr& ctx, const ContextPtr& on, const std::filesystem::path& dir) {
  const Tensor a = test::random_bytes_tensor(ctx, {3000}, DType::F32, 1);
  const Tensor b = test::random_bytes_tensor(ctx, {40, 50}, DType::E4M3, 2);
  write_tensor_file(dir / "t.bin", {{"a", a}, {"b", b}});
  const TensorFileReader reader = TensorFileReader::open(dir / "t.bin");
  auto zeros_on = [&](const Shape& shape, DType dtype) {
    Tensor z = ops::zeros(ctx, shape, dtype);
    return on->device().is_cpu() ? z : ops::to(z, on);
  };
  Tensor whole = zeros_on({3000}, DType::F32);
  Tensor strided = zeros_on({40, 50}, DType::E4M3).transpose(0, 1);  // filled in its logical order
  Tensor host = ops::zeros(ctx, {100}, DType::F32);
  reader.read_slices_into(
      {{"a", 0, whole.slice(0, 0, 1000)}, {"a", 1000, whole.slice(0, 1000, 3000)}, {"b", 0, strided}, {"a", 7, host}},
      3);
  EXPECT_EQ(test::raw_bytes(host_contiguous(whole, ctx)), test::raw_bytes(a));
  EXPECT_EQ(test::raw_bytes(host_contiguous(strided, ctx)), test::raw_bytes(b));
  EXPECT_EQ(test::raw_bytes(host), test::raw_bytes(host_contiguous(a.slice(0, 7, 107), ctx)));
}

TEST_F(StagedUploadTest, BatchReadOfATensorFileIntoSlices) { batch_read_into_slices(ctx_, ctx_, dir_); }

TEST_F(StagedUploadTest, CudaBatchReadOfATensorFileIntoDeviceSlices) {
  if (ops::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  batch_read_into_slices(ctx_, ops::make_context(Device::cuda(0)), dir_);
}

}  // namespace
}  // namespace coat::io
