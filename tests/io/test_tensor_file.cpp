// Native tensor files: bit-exact round trips of every dtype, the documented layout, slices, and the
// errors for truncated or corrupted files and mismatched destinations.
#include <gtest/gtest.h>

#include "expect_error.h"
#include "io_test_util.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "coat/core/error.h"
#include "coat/io/checksum.h"
#include "coat/io/tensor_bytes.h"
#include "coat/io/tensor_file.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/runtime.h"

namespace coat::io {
namespace {

using coat::test::expect_error_containing;

class TensorFileTest : public test::TempDirTest {
 protected:
  ContextPtr ctx_ = std::make_shared<CpuContext>();
};

uint64_t le64(const std::vector<uint8_t>& bytes, size_t at) {
  uint64_t v;
  std::memcpy(&v, bytes.data() + at, 8);
  return v;
}

TEST_F(TensorFileTest, RoundTripOfEveryDTypeIsBitExact) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  uint32_t seed = 1;
  for (DType dtype : kAllDTypes) {
    const std::string name(dtype_name(dtype));
    tensors.emplace_back("model.layers.0." + name, test::random_bytes_tensor(ctx_, {3, 5}, dtype, seed++));
    tensors.emplace_back("scalar." + name, test::random_bytes_tensor(ctx_, {}, dtype, seed++));
    tensors.emplace_back("empty." + name, test::random_bytes_tensor(ctx_, {0, 4}, dtype, seed++));
  }
  const auto path = dir_ / "rank_00000.bin";
  write_tensor_file(path, tensors);
  const TensorFileReader reader = TensorFileReader::open(path);
  EXPECT_EQ(reader.path(), path);
  ASSERT_EQ(reader.entries().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    const TensorFileEntry& e = reader.entries()[i];
    EXPECT_EQ(e.name, name);
    EXPECT_EQ(e.dtype, t.dtype());
    EXPECT_EQ(e.shape, t.shape());
    EXPECT_EQ(e.bytes, t.nbytes());
    EXPECT_EQ(e.offset % kTensorFileAlignment, 0u) << name;
    EXPECT_EQ(e.crc32c, crc32c(t.data_ptr(), t.nbytes()));
    const Tensor back = reader.read(name);
    EXPECT_TRUE(back.device().is_cpu());
    EXPECT_EQ(back.dtype(), t.dtype());
    EXPECT_EQ(back.shape(), t.shape());
    EXPECT_EQ(test::raw_bytes(back), test::raw_bytes(t)) << name;
  }
  reader.verify_all();
}

TEST_F(TensorFileTest, LayoutMatchesTheHeaderComment) {
  Tensor a = ops::arange(ctx_, 3, DType::F32, 1.0);
  Tensor b = ops::arange(ctx_, 70, DType::BF16);
  const auto path = dir_ / "t.bin";
  write_tensor_file(path, {{"a", a}, {"b", b}});
  const std::vector<uint8_t> bytes = test::read_file_bytes(path);
  EXPECT_EQ(std::string(bytes.begin(), bytes.begin() + 8), "COATCKPT");
  uint32_t version;
  std::memcpy(&version, bytes.data() + 8, 4);
  EXPECT_EQ(version, kTensorFileVersion);
  const uint64_t index_bytes = le64(bytes, 16), data_offset = le64(bytes, 32), data_bytes = le64(bytes, 40);
  EXPECT_EQ(data_offset % 256, 0u);
  EXPECT_GE(data_offset, 64 + index_bytes);
  EXPECT_EQ(data_bytes, 256u + 140u);  // a: 12 bytes, padded to 256; b: 140 bytes
  EXPECT_EQ(bytes.size(), data_offset + data_bytes);
  uint32_t index_crc;
  std::memcpy(&index_crc, bytes.data() + 24, 4);
  const std::string index(bytes.begin() + 64, bytes.begin() + 64 + static_cast<std::ptrdiff_t>(index_bytes));
  EXPECT_EQ(index_crc, crc32c(index.data(), index.size()));
  const nlohmann::json j = nlohmann::json::parse(index);
  ASSERT_EQ(j["tensors"].size(), 2u);
  EXPECT_EQ(j["tensors"][0]["name"], "a");
  EXPECT_EQ(j["tensors"][0]["dtype"], "f32");
  EXPECT_EQ(j["tensors"][0]["shape"], nlohmann::json::array({3}));
  EXPECT_EQ(j["tensors"][0]["offset"], 0);
  EXPECT_EQ(j["tensors"][0]["bytes"], 12);
  EXPECT_EQ(j["tensors"][0]["crc32c"], crc32c_hex(crc32c(a.data_ptr(), 12)));
  EXPECT_EQ(j["tensors"][1]["offset"], 256);
  EXPECT_EQ(j["tensors"][1]["dtype"], "bf16");
  float first;
  std::memcpy(&first, bytes.data() + data_offset, 4);
  EXPECT_EQ(first, 1.0f);
}

TEST_F(TensorFileTest, NonContiguousSourceAndDestination) {
  const Tensor base = test::random_bytes_tensor(ctx_, {4, 6}, DType::BF16, 11);
  const Tensor transposed = base.transpose(0, 1);  // (6,4), not contiguous
  ASSERT_FALSE(transposed.is_contiguous());
  const auto path = dir_ / "t.bin";
  write_tensor_file(path, {{"w", transposed}});
  const TensorFileReader reader = TensorFileReader::open(path);
  const Tensor back = reader.read("w");
  const auto* src = static_cast<const uint16_t*>(base.data_ptr());
  const auto* got = static_cast<const uint16_t*>(back.data_ptr());
  for (int i = 0; i < 6; ++i) {
    for (int j = 0; j < 4; ++j) EXPECT_EQ(got[i * 4 + j], src[j * 6 + i]);
  }
  // Into a strided destination: a transposed view of a (4,6) buffer.
  Tensor buffer = ops::zeros(ctx_, {4, 6}, DType::BF16);
  Tensor view = buffer.transpose(0, 1);
  reader.read_into("w", view);
  EXPECT_EQ(test::raw_bytes(buffer), test::raw_bytes(base));
}

TEST_F(TensorFileTest, ReadSlices) {
  const auto path = dir_ / "t.bin";
  write_tensor_file(path, {{"unit.0", ops::arange(ctx_, 100, DType::F32)}});
  const TensorFileReader reader = TensorFileReader::open(path);
  const Tensor slice = reader.read_slice("unit.0", 10, 20);
  EXPECT_EQ(slice.shape(), (Shape{20}));
  for (int i = 0; i < 20; ++i) EXPECT_EQ(slice.data<float>()[i], static_cast<float>(10 + i));
  EXPECT_EQ(reader.read_slice("unit.0", 100, 0).numel(), 0);
  Tensor dst = ops::zeros(ctx_, {2, 5}, DType::F32);
  reader.read_slice_into("unit.0", 90, dst);
  EXPECT_EQ(dst.data<float>()[9], 99.0f);
  expect_error_containing([&] { reader.read_slice("unit.0", 90, 11); },
                          "elements [90, 101) of tensor 'unit.0' are outside its 100 elements");
  expect_error_containing([&] { reader.read_slice("unit.0", -1, 2); }, "outside its 100 elements");
  Tensor wrong = ops::zeros(ctx_, {4}, DType::BF16);
  expect_error_containing([&] { reader.read_slice_into("unit.0", 0, wrong); },
                          "is f32 but the destination is bf16");
}

TEST_F(TensorFileTest, TruncatedFilesNameTheFileAndTheByteCounts) {
  const auto path = dir_ / "full.bin";
  write_tensor_file(path,
                    {{"a", ops::arange(ctx_, 100, DType::F32)}, {"b", ops::arange(ctx_, 10, DType::I64)}});
  const std::vector<uint8_t> bytes = test::read_file_bytes(path);
  const size_t data_offset = le64(bytes, 32);
  for (size_t cut : {size_t{0}, size_t{5}, size_t{8}, size_t{40}, size_t{63}, size_t{64}, size_t{70},
                     data_offset - 1, data_offset, data_offset + 3, bytes.size() - 1}) {
    SCOPED_TRACE(cut);
    const auto cut_path = dir_ / "cut.bin";
    test::write_file_bytes(
        cut_path, std::vector<uint8_t>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(cut)));
    try {
      TensorFileReader::open(cut_path);
      ADD_FAILURE() << "no error for a file cut at " << cut;
    } catch (const IoError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("cut.bin"), std::string::npos) << what;
      EXPECT_NE(what.find("truncated"), std::string::npos) << what;
      EXPECT_NE(what.find(std::to_string(cut) + " bytes"), std::string::npos) << what;
      if (cut >= 64) {
        EXPECT_NE(what.find(std::to_string(bytes.size()) + " bytes"), std::string::npos) << what;
      }
    }
  }
  std::vector<uint8_t> longer = bytes;
  longer.push_back(0);
  test::write_file_bytes(dir_ / "long.bin", longer);
  expect_error_containing([&] { TensorFileReader::open(dir_ / "long.bin"); }, "(trailing bytes)");
}

TEST_F(TensorFileTest, NotATensorFileAndMissingFile) {
  test::write_file_bytes(dir_ / "x.bin", std::vector<uint8_t>(100, 'x'));
  expect_error_containing([&] { TensorFileReader::open(dir_ / "x.bin"); }, "not a coat tensor file");
  expect_error_containing([&] { TensorFileReader::open(dir_ / "missing.bin"); },
                          "missing.bin\": cannot open");
}

TEST_F(TensorFileTest, CorruptionIsDetectedPerTensor) {
  const auto path = dir_ / "rank_00000.bin";
  write_tensor_file(path, {{"a", ops::arange(ctx_, 64, DType::F32)},
                           {"model.norm.weight", ops::arange(ctx_, 64, DType::F32)}});
  std::vector<uint8_t> bytes = test::read_file_bytes(path);
  const TensorFileEntry b = TensorFileReader::open(path).entry("model.norm.weight");
  bytes[b.offset + 17] ^= 0x01;
  test::write_file_bytes(path, bytes);
  const TensorFileReader reader = TensorFileReader::open(path);  // the header is fine
  EXPECT_EQ(reader.read("a").data<float>()[63], 63.0f);
  Tensor dst = ops::full(ctx_, {64}, 7.0, DType::F32);
  expect_error_containing([&] { reader.read_into("model.norm.weight", dst); },
                          "rank_00000.bin\": checksum mismatch in tensor 'model.norm.weight'");
  EXPECT_EQ(dst.data<float>()[4], 7.0f);  // untouched
  expect_error_containing([&] { reader.read_slice("model.norm.weight", 0, 1); }, "checksum mismatch");
  expect_error_containing([&] { reader.verify_all(); }, "checksum mismatch");

  // A flipped byte in the index.
  bytes[b.offset + 17] ^= 0x01;
  bytes[64 + 5] ^= 0x20;
  test::write_file_bytes(path, bytes);
  expect_error_containing([&] { TensorFileReader::open(path); }, "checksum mismatch in the index");
}

TEST_F(TensorFileTest, MismatchedDestinationsNameBothShapes) {
  const auto path = dir_ / "t.bin";
  const std::string name = "model.layers.0.self_attn.q_proj.weight";
  write_tensor_file(path, {{name, ops::zeros(ctx_, {4, 8}, DType::BF16)}});
  const TensorFileReader reader = TensorFileReader::open(path);
  Tensor wrong_shape = ops::zeros(ctx_, {8, 4}, DType::BF16);
  expect_error_containing(
      [&] { reader.read_into(name, wrong_shape); },
      "checkpoint tensor 'model.layers.0.self_attn.q_proj.weight' has shape (4,8) but the "
      "model expects (8,4)");
  Tensor wrong_dtype = ops::zeros(ctx_, {4, 8}, DType::F32);
  expect_error_containing([&] { reader.read_into(name, wrong_dtype); }, "is bf16 but the model expects f32");
  expect_error_containing([&] { reader.read("model.embed_tokens.weight"); },
                          "has no tensor 'model.embed_tokens.weight' (it has 1 tensors: "
                          "model.layers.0.self_attn.q_proj.weight)");
  EXPECT_TRUE(reader.contains(name));
  EXPECT_FALSE(reader.contains("x"));
}

TEST_F(TensorFileTest, WriterRejectsBadNamesAndKeepsTheOldFile) {
  const auto path = dir_ / "t.bin";
  write_tensor_file(path, {{"old", ops::arange(ctx_, 4, DType::F32)}});
  const Tensor t = ops::zeros(ctx_, {2}, DType::F32);
  expect_error_containing(
      [&] {
        write_tensor_file(path, {{"x", t}, {"x", t}});
      },
      "tensor name 'x' appears twice");
  expect_error_containing([&] { write_tensor_file(path, {{"", t}}); }, "empty name");
  expect_error_containing([&] { write_tensor_file(path, {{"x", t}, {"y", Tensor()}}); }, "'y' is undefined");
  EXPECT_TRUE(TensorFileReader::open(path).contains("old"));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_), {}), 1);
}

// Written over a recycled file of 0xFF bytes (longer, then shorter than the new one), the file is the same
// byte for byte as a new one, padding included, and its checksums verify.
TEST_F(TensorFileTest, ARecycledFileHoldsTheSameBytesAsANewOne) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  uint64_t seed = 7;
  for (const DType dtype : {DType::F32, DType::BF16, DType::U8, DType::F64})
    tensors.emplace_back("t." + std::string(dtype_name(dtype)), test::random_bytes_tensor(ctx_, {37, 3}, dtype, seed++));
  const TensorFileSummary fresh = write_tensor_file(dir_ / "fresh.bin", tensors);
  const std::string expected = test::read_file_text(dir_ / "fresh.bin");
  for (const uint64_t old_bytes : {fresh.bytes * 3, fresh.bytes / 2}) {
    {
      std::ofstream old(dir_ / "old.bin", std::ios::binary | std::ios::trunc);
      old << std::string(old_bytes, '\xff');
    }
    TensorFileWriteOptions options;
    options.io_threads = 2;
    options.chunk_bytes = 64;
    options.recycle = dir_ / "old.bin";
    const TensorFileSummary got = write_tensor_file(dir_ / "recycled.bin", tensors, options);
    EXPECT_FALSE(std::filesystem::exists(dir_ / "old.bin"));
    EXPECT_EQ(got.bytes, fresh.bytes);
    EXPECT_EQ(tensor_file_bytes(tensors), fresh.bytes);
    EXPECT_EQ(got.crc32c, fresh.crc32c);
    EXPECT_EQ(test::read_file_text(dir_ / "recycled.bin"), expected) << "old file of " << old_bytes << " bytes";
    EXPECT_NO_THROW(TensorFileReader::open(dir_ / "recycled.bin").verify_all());
  }
}

TEST_F(TensorFileTest, EmptyFileHasNoTensors) {
  write_tensor_file(dir_ / "e.bin", {});
  const TensorFileReader reader = TensorFileReader::open(dir_ / "e.bin");
  EXPECT_TRUE(reader.entries().empty());
  expect_error_containing([&] { reader.read("a"); }, "has no tensor 'a' (it has 0 tensors)");
}

TEST_F(TensorFileTest, CudaTensorsRoundTripBitExact) {
  if (ops::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const ContextPtr gpu = ops::make_context(Device::cuda(0));
  const Tensor host = test::random_bytes_tensor(ctx_, {6, 10}, DType::E4M3, 5);
  const Tensor on_gpu = ops::to(host, gpu);
  const auto path = dir_ / "gpu.bin";
  write_tensor_file(path, {{"w", on_gpu}, {"wt", on_gpu.transpose(0, 1)}});
  const TensorFileReader reader = TensorFileReader::open(path);
  const Tensor back = reader.read("w", gpu);
  EXPECT_TRUE(back.device().is_cuda());
  EXPECT_EQ(test::raw_bytes(host_contiguous(back, ctx_)), test::raw_bytes(host));
  Tensor strided = ops::to(ops::zeros(ctx_, {6, 10}, DType::E4M3), gpu).transpose(0, 1);
  reader.read_into("wt", strided);
  EXPECT_EQ(test::raw_bytes(host_contiguous(strided.transpose(0, 1), ctx_)), test::raw_bytes(host));
}

}  // namespace
}  // namespace coat::io
