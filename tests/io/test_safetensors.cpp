// safetensors: the exact bytes of a small file, bit-exact round trips, and the reader's validation.
#include <gtest/gtest.h>

#include "expect_error.h"
#include "io_test_util.h"

#include "coat/core/error.h"
#include "coat/io/safetensors.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"

namespace coat::io {
namespace {

using coat::test::expect_error_containing;

class SafetensorsTest : public test::TempDirTest {
 protected:
  ContextPtr ctx_ = std::make_shared<CpuContext>();

  // A file from a header string and a data section, as another writer would produce it.
  std::filesystem::path hand_made(const std::string& header, const std::vector<uint8_t>& data,
                                  const std::string& name = "hand.safetensors") {
    std::vector<uint8_t> bytes(8);
    const uint64_t n = header.size();
    std::memcpy(bytes.data(), &n, 8);
    bytes.insert(bytes.end(), header.begin(), header.end());
    bytes.insert(bytes.end(), data.begin(), data.end());
    test::write_file_bytes(dir_ / name, bytes);
    return dir_ / name;
  }
};

TEST_F(SafetensorsTest, DTypeNames) {
  EXPECT_EQ(safetensors_dtype_name(DType::BF16), "BF16");
  EXPECT_EQ(safetensors_dtype_name(DType::E4M3), "F8_E4M3");
  EXPECT_EQ(safetensors_dtype_name(DType::E5M2), "F8_E5M2");
  for (DType t : kAllDTypes) EXPECT_EQ(dtype_from_safetensors(safetensors_dtype_name(t)), t);
  EXPECT_FALSE(dtype_from_safetensors("I8").has_value());
  EXPECT_FALSE(dtype_from_safetensors("bf16").has_value());
}

TEST_F(SafetensorsTest, ExactBytesOfASmallFile) {
  const Tensor weight = ops::from_vector(ctx_, {2}, DType::F32, std::vector<double>{1.0, -2.0});
  const Tensor bias = ops::from_vector(ctx_, {1, 2}, DType::BF16, std::vector<double>{1.0, 0.5});
  const auto path = dir_ / "model.safetensors";
  write_safetensors(path, {{"weight", weight}, {"bias", bias}}, {{"format", "pt"}});
  const std::string json =
      "{\"__metadata__\":{\"format\":\"pt\"},"
      "\"weight\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
      "\"bias\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[8,12]}}";
  ASSERT_EQ(json.size(), 150u);
  std::vector<uint8_t> expected = {0x98, 0, 0, 0, 0, 0, 0, 0};  // 152: 150 bytes of JSON + 2 spaces
  expected.insert(expected.end(), json.begin(), json.end());
  expected.insert(expected.end(), {' ', ' '});
  expected.insert(expected.end(), {0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0,  // 1.0f, -2.0f
                                   0x80, 0x3F, 0x00, 0x3F});                        // bf16 1.0, 0.5
  EXPECT_EQ(test::read_file_bytes(path), expected);

  const SafetensorsReader reader = SafetensorsReader::open(path);
  EXPECT_EQ(reader.data_offset(), 160u);
  EXPECT_EQ(reader.metadata().at("format"), "pt");
  ASSERT_EQ(reader.entries().size(), 2u);
  EXPECT_EQ(reader.entries()[0].name, "weight");  // file order
  EXPECT_EQ(reader.entries()[1].dtype_string, "BF16");
  EXPECT_EQ(reader.entries()[1].begin, 8u);
  EXPECT_EQ(reader.entries()[1].end, 12u);
  EXPECT_EQ(ops::to_double_vector(reader.read("bias")), (std::vector<double>{1.0, 0.5}));
}

TEST_F(SafetensorsTest, NoMetadataNoMetadataKey) {
  write_safetensors(dir_ / "a.safetensors", {{"x", ops::zeros(ctx_, {1}, DType::U8)}});
  const std::vector<uint8_t> bytes = test::read_file_bytes(dir_ / "a.safetensors");
  const std::string text(bytes.begin() + 8, bytes.end());
  EXPECT_EQ(text.find("__metadata__"), std::string::npos);
  EXPECT_EQ(text.rfind("{\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 0), 0u);
  EXPECT_EQ((bytes.size() - 1) % 8, 0u);  // the data starts 8-byte aligned
}

TEST_F(SafetensorsTest, RoundTripOfEveryDTypeIsBitExact) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  uint32_t seed = 100;
  for (DType dtype : kAllDTypes) {
    tensors.emplace_back("t." + std::string(dtype_name(dtype)),
                         test::random_bytes_tensor(ctx_, {2, 3, 3}, dtype, seed++));
  }
  tensors.emplace_back("scalar", test::random_bytes_tensor(ctx_, {}, DType::F64, seed++));
  tensors.emplace_back("empty", test::random_bytes_tensor(ctx_, {3, 0}, DType::BF16, seed++));
  const Tensor base = test::random_bytes_tensor(ctx_, {3, 4}, DType::F32, seed++);
  tensors.emplace_back("transposed", base.transpose(0, 1));
  const auto path = dir_ / "all.safetensors";
  write_safetensors(path, tensors, {{"producer", "coat"}, {"step", "12"}});
  const SafetensorsReader reader = SafetensorsReader::open(path);
  EXPECT_EQ(reader.metadata(), (std::map<std::string, std::string>{{"producer", "coat"}, {"step", "12"}}));
  ASSERT_EQ(reader.entries().size(), tensors.size());
  for (size_t i = 0; i + 1 < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    EXPECT_EQ(reader.entries()[i].name, name);
    const Tensor back = reader.read(name);
    EXPECT_EQ(back.dtype(), t.dtype());
    EXPECT_EQ(back.shape(), t.shape());
    EXPECT_EQ(test::raw_bytes(back), test::raw_bytes(t)) << name;
  }
  // The transposed view was written in its row-major order; read it back into a strided destination.
  Tensor buffer = ops::zeros(ctx_, {3, 4}, DType::F32);
  Tensor view = buffer.transpose(0, 1);
  reader.read_into("transposed", view);
  EXPECT_EQ(test::raw_bytes(buffer), test::raw_bytes(base));
}

TEST_F(SafetensorsTest, ReadsForeignFilesAndTensorsOfUnsupportedDTypes) {
  // Another writer's order (by offset, not by key) and an I8 tensor coat cannot represent.
  const auto path = hand_made(
      "{\"b\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[4,6]},"
      "\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}",
      {0x00, 0x3C, 0x00, 0xC0, 0x01, 0xFF});
  const SafetensorsReader reader = SafetensorsReader::open(path);
  EXPECT_EQ(reader.entries()[0].name, "b");
  EXPECT_FALSE(reader.entries()[0].dtype.has_value());
  EXPECT_TRUE(reader.metadata().empty());
  EXPECT_EQ(ops::to_double_vector(reader.read("a")), (std::vector<double>{1.0, -2.0}));
  expect_error_containing([&] { reader.read("b"); }, "has dtype I8, which coat has no dtype for");
  expect_error_containing([&] { reader.read("c"); }, "has no tensor 'c' (it has 2 tensors: b, a)");
  Tensor wrong = ops::zeros(ctx_, {1, 2}, DType::F16);
  expect_error_containing([&] { reader.read_into("a", wrong); },
                          "safetensors tensor 'a' has shape (2) but the model expects (1,2)");
  Tensor wrong_dtype = ops::zeros(ctx_, {2}, DType::F32);
  expect_error_containing([&] { reader.read_into("a", wrong_dtype); }, "is F16 but the model expects F32");
}

TEST_F(SafetensorsTest, TruncatedFilesAreErrorsNamingTheFile) {
  const auto path = dir_ / "full.safetensors";
  write_safetensors(path,
                    {{"a", ops::arange(ctx_, 10, DType::F32)}, {"b", ops::arange(ctx_, 6, DType::BF16)}});
  const std::vector<uint8_t> bytes = test::read_file_bytes(path);
  uint64_t header_bytes;
  std::memcpy(&header_bytes, bytes.data(), 8);
  for (size_t cut : {size_t{0}, size_t{7}, size_t{8}, size_t{20}, size_t{8 + header_bytes},
                     size_t{8 + header_bytes + 39}, bytes.size() - 1}) {
    SCOPED_TRACE(cut);
    const auto cut_path = dir_ / "cut.safetensors";
    test::write_file_bytes(
        cut_path, std::vector<uint8_t>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(cut)));
    expect_error_containing([&] { SafetensorsReader::open(cut_path); }, "cut.safetensors\": truncated");
  }
  test::write_file_bytes(dir_ / "cut.safetensors",
                         std::vector<uint8_t>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(
                                                                                 8 + header_bytes + 41)));
  expect_error_containing(
      [&] { SafetensorsReader::open(dir_ / "cut.safetensors"); },
      "tensor 'b' occupies bytes [40, 52) of the data section but the file has only 41 data bytes");
}

TEST_F(SafetensorsTest, BadHeadersAreErrors) {
  expect_error_containing(
      [&] {
        SafetensorsReader::open(
            hand_made("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", {0, 0, 0, 0}));
      },
      "is F32 (2) (8 bytes) but its data_offsets [0, 4) span 4 bytes");
  expect_error_containing(
      [&] {
        SafetensorsReader::open(
            hand_made("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                      "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1,3]}}",
                      {0, 0, 0}));
      },
      "tensor 'b' starts at data byte 1 but 'a' ends at 2 (overlap)");
  expect_error_containing(
      [&] {
        SafetensorsReader::open(
            hand_made("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1,3]}}", {0, 0, 0}));
      },
      "(gap)");
  expect_error_containing(
      [&] {
        SafetensorsReader::open(
            hand_made("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", {0, 0}));
      },
      "(trailing bytes)");
  expect_error_containing(
      [&] {
        SafetensorsReader::open(
            hand_made("{\"a\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,1]}}", {0}));
      },
      "unknown dtype 'Q4'");
  expect_error_containing([&] { SafetensorsReader::open(hand_made("{\"__metadata__\":{\"n\":1}}", {})); },
                          "__metadata__ value of 'n' is not a string");
  expect_error_containing([&] { SafetensorsReader::open(hand_made("[1,2]", {})); }, "not a JSON object");
  expect_error_containing([&] { SafetensorsReader::open(hand_made("{\"a\":", {})); }, "not valid JSON");
  std::vector<uint8_t> huge(16, 0);
  huge[5] = 1;  // a header length of 2^40
  test::write_file_bytes(dir_ / "huge.safetensors", huge);
  expect_error_containing([&] { SafetensorsReader::open(dir_ / "huge.safetensors"); },
                          "exceeds the format's limit");
}

TEST_F(SafetensorsTest, WriterRejectsBadNames) {
  const Tensor t = ops::zeros(ctx_, {1}, DType::F32);
  expect_error_containing(
      [&] {
        write_safetensors(dir_ / "x.safetensors", {{"__metadata__", t}});
      },
      "is reserved");
  expect_error_containing(
      [&] {
        write_safetensors(dir_ / "x.safetensors", {{"a", t}, {"a", t}});
      },
      "appears twice");
  EXPECT_FALSE(std::filesystem::exists(dir_ / "x.safetensors"));
}

}  // namespace
}  // namespace coat::io
