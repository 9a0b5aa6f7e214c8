// Token files: round trips, headerless arrays, and the errors for bad files and out-of-vocabulary tokens.
#include <gtest/gtest.h>

#include "expect_error.h"

#include <filesystem>
#include <fstream>
#include <random>

#include "coat/core/error.h"
#include "coat/data/token_file.h"

namespace coat::data {
namespace {

class TokenFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("coat_token_file_test_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
            "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};


TEST_F(TokenFileTest, RoundTripBothWidths) {
  std::mt19937 gen(3);
  std::vector<uint32_t> tokens(10007);
  for (uint32_t& t : tokens) t = gen() % 32000;
  for (TokenWidth w : {TokenWidth::U16, TokenWidth::U32}) {
    const auto path = dir_ / "tokens.bin";
    write_token_file(path, tokens, w, 32000);
    TokenFile f = TokenFile::open(path);
    EXPECT_EQ(f.size(), tokens.size());
    EXPECT_EQ(f.vocab_size(), 32000u);
    EXPECT_EQ(f.width(), w);
    std::vector<int32_t> out(100);
    f.read(5000, out, 32000);
    for (size_t i = 0; i < out.size(); ++i) EXPECT_EQ(static_cast<uint32_t>(out[i]), tokens[5000 + i]);
    EXPECT_FALSE(std::filesystem::exists(dir_ / "tokens.bin.tmp"));
  }
}

TEST_F(TokenFileTest, RawArrays) {
  const auto path = dir_ / "raw.u16";
  std::vector<uint16_t> raw = {5, 6, 7, 65535};
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(raw.data()), 8);
  TokenFile f = TokenFile::open_raw(path, TokenWidth::U16);
  ASSERT_EQ(f.size(), 4u);
  EXPECT_EQ(f[3], 65535u);
  EXPECT_EQ(TokenFile::open_raw(path, TokenWidth::U32).size(), 2u);
  std::ofstream(path, std::ios::binary | std::ios::app).put('x');
  test::expect_error_containing([&] { TokenFile::open_raw(path, TokenWidth::U16); }, "not a multiple of the 2-byte");
}

TEST_F(TokenFileTest, RawArraysU32AndOddSizes) {
  const auto path = dir_ / "raw.u32";
  std::vector<uint32_t> raw = {0, 70000, 3, 100000, 9};
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(raw.data()), 20);
  TokenFile f = TokenFile::open_raw(path, TokenWidth::U32, 200000);
  ASSERT_EQ(f.size(), 5u);
  EXPECT_EQ(f.vocab_size(), 200000u);
  EXPECT_EQ(f[1], 70000u);
  std::vector<int32_t> out(5);
  f.read(0, out);
  EXPECT_EQ(out[3], 100000);
  // 21 and 22 bytes: not whole u32 tokens; the message names the file and the width.
  // (From a 24-byte buffer: the 20-byte one was read past its end, which AddressSanitizer reports.)
  std::vector<uint32_t> padded = raw;
  padded.push_back(0);
  for (int extra : {1, 2}) {
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(padded.data()), 20 + extra);
    test::expect_error_containing([&] { TokenFile::open_raw(path, TokenWidth::U32); },
                    "raw.u32\": " + std::to_string(20 + extra) + " bytes is not a multiple of the 4-byte");
  }
  // An empty raw file is an empty token stream.
  std::ofstream(path, std::ios::binary | std::ios::trunc).close();
  EXPECT_EQ(TokenFile::open_raw(path, TokenWidth::U16).size(), 0u);
  test::expect_error_containing([&] { TokenFile::open_raw(dir_ / "absent.u16", TokenWidth::U16); },
                  "absent.u16\": cannot open");
  EXPECT_EQ(parse_token_width("u16"), TokenWidth::U16);
  EXPECT_EQ(parse_token_width("uint32"), TokenWidth::U32);
  test::expect_error_containing([&] { parse_token_width("u8"); }, "expected u16 or u32");
  EXPECT_EQ(token_width_for_vocab(65536), TokenWidth::U16);
  EXPECT_EQ(token_width_for_vocab(65537), TokenWidth::U32);
}

TEST_F(TokenFileTest, OutOfVocabularyDetection) {
  // Large enough to span several scan blocks; the first offender sits deep inside.
  std::vector<uint16_t> raw(100003);
  for (size_t i = 0; i < raw.size(); ++i) raw[i] = static_cast<uint16_t>(i % 1000);
  raw[70001] = 1000;
  raw[90000] = 65535;
  const auto path = dir_ / "raw.u16";
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(raw.data()), static_cast<std::streamsize>(raw.size() * 2));
  TokenFile f = TokenFile::open_raw(path, TokenWidth::U16, 1000);
  const auto bad = f.find_out_of_range();
  ASSERT_TRUE(bad.has_value());
  EXPECT_EQ(bad->position, 70001u);
  EXPECT_EQ(bad->value, 1000u);
  EXPECT_FALSE(f.find_out_of_range(65536).has_value());
  EXPECT_EQ(f.find_out_of_range(1001)->position, 90000u);
  test::expect_error_containing([&] { f.validate(); },
                  "token 1000 at position 70001 is past the vocabulary (vocab_size 1000");
  test::expect_error_containing([&] { TokenFile::open_raw(path, TokenWidth::U16, 1000, /*validate=*/true); },
                  "raw.u16\": token 1000 at position 70001");
  EXPECT_NO_THROW(TokenFile::open_raw(path, TokenWidth::U16, 65536, /*validate=*/true));
  // No vocabulary known: validation is refused rather than silently passed.
  test::expect_error_containing([&] { TokenFile::open_raw(path, TokenWidth::U16).validate(); },
                  "without a vocabulary size");
  // Files with a header are validated against their own vocab_size.
  std::vector<uint32_t> tokens = {1, 2, 3, 7, 5};
  write_token_file(dir_ / "t.bin", tokens, TokenWidth::U32, 0);
  TokenFile g = TokenFile::open(dir_ / "t.bin");
  EXPECT_EQ(g.find_out_of_range(6)->position, 3u);
  EXPECT_NO_THROW(g.validate(8));
}

TEST_F(TokenFileTest, StreamingWriter) {
  const auto path = dir_ / "stream.bin";
  std::vector<int32_t> expected;
  {
    TokenFileWriter w(path, TokenWidth::U16, 40000);
    // More than the 1 MiB write buffer, in uneven pieces.
    for (int piece = 0; piece < 70; ++piece) {
      std::vector<int32_t> chunk(static_cast<size_t>(10000 + piece));
      for (size_t i = 0; i < chunk.size(); ++i)
        chunk[i] = static_cast<int32_t>((expected.size() + i) * 7 % 40000);
      w.append(std::span<const int32_t>(chunk));
      expected.insert(expected.end(), chunk.begin(), chunk.end());
      EXPECT_FALSE(std::filesystem::exists(path));
    }
    EXPECT_EQ(w.count(), expected.size());
    w.commit();
    test::expect_error_containing([&] { w.append(std::span<const int32_t>(expected.data(), 1)); }, "append after commit");
  }
  EXPECT_FALSE(std::filesystem::exists(dir_ / "stream.bin.tmp"));
  TokenFile f = TokenFile::open(path);
  ASSERT_EQ(f.size(), expected.size());
  EXPECT_EQ(f.vocab_size(), 40000u);
  std::vector<int32_t> out(expected.size());
  f.read(0, out, 40000);
  EXPECT_EQ(out, expected);

  // A writer abandoned part-way (an exception) leaves the earlier file alone and no temporary behind.
  try {
    TokenFileWriter w(path, TokenWidth::U16, 100);
    const std::vector<int32_t> ok = {1, 2, 3}, bad = {4, -5};
    w.append(std::span<const int32_t>(ok));
    w.append(std::span<const int32_t>(bad));
    FAIL() << "negative token accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("token -5 at position 4 is negative"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(dir_ / "stream.bin.tmp"));
  EXPECT_EQ(TokenFile::open(path).size(), expected.size());
  test::expect_error_containing([&] { TokenFileWriter(path, TokenWidth::U16, 70000); }, "does not fit u16");
  test::expect_error_containing([&] { TokenFileWriter(dir_ / "no_such_dir" / "x.bin", TokenWidth::U16, 10); },
                  "cannot create");
}

TEST_F(TokenFileTest, ClearErrors) {
  test::expect_error_containing([&] { TokenFile::open(dir_ / "missing.bin"); }, "missing.bin\": cannot open");
  const auto text = dir_ / "text.bin";
  std::ofstream(text) << "hello, this is not a token file at all, just text";
  test::expect_error_containing([&] { TokenFile::open(text); }, "not a coat token file");
  const auto path = dir_ / "t.bin";
  std::vector<uint32_t> tokens = {1, 2, 3, 4, 5, 6};
  write_token_file(path, tokens, TokenWidth::U16, 7);
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 3);
  test::expect_error_containing([&] { TokenFile::open(path); }, "(truncated)");
  write_token_file(path, tokens, TokenWidth::U16, 0);
  TokenFile f = TokenFile::open(path);
  std::vector<int32_t> out(6);
  test::expect_error_containing([&] { f.read(0, out, 5); },
                  "token 5 at position 4 is past the model's vocabulary (vocab_size 5)");
  test::expect_error_containing([&] { f.read(3, out); }, "past its end");
  test::expect_error_containing([&] { write_token_file(path, tokens, TokenWidth::U16, 4); }, "token 4 at position 3");
  // The failed write left the earlier file intact.
  EXPECT_EQ(TokenFile::open(path).size(), 6u);
}

// Found by fuzz/fuzz_token_file: a header whose count times the width overflows 64 bits to the file's size
// passed the size check and the reads ran past the mapping.
TEST_F(TokenFileTest, FuzzRegressionCountOverflowingTheByteSizeIsRefused) {
  const auto path = dir_ / "overflow.bin";
  std::string bytes(TokenFileHeader::kMagic, 8);
  const auto put = [&bytes](uint64_t value, size_t width) {
    for (size_t i = 0; i < width; ++i) bytes.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
  };
  put(1, 4);                            // version
  put(4, 4);                            // width
  put(0, 4);                            // vocab_size
  put(0, 4);                            // reserved
  put((uint64_t{1} << 62) + 2, 8);      // count: 4 * count = 2^64 + 8, which wraps to the 8 bytes that follow
  put(0x0102030405060708ull, 8);
  std::ofstream(path, std::ios::binary) << bytes;
  test::expect_error_containing([&] { TokenFile::open(path); },
                                "header says 4611686018427387906 tokens of 4 bytes, more than 2^64 bytes (a damaged header)");
}

}  // namespace
}  // namespace coat::data
