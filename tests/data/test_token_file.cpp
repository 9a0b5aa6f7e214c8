// Token files: round trips, headerless arrays, and the errors for bad files and out-of-vocabulary tokens.
#include <gtest/gtest.h>

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
           ("coat_token_file_test_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

template <typename Fn>
void expect_io_error(Fn&& fn, const std::string& needle) {
  try {
    fn();
    FAIL() << "no exception; expected one containing: " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

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
  expect_io_error([&] { TokenFile::open_raw(path, TokenWidth::U16); }, "not a multiple of the 2-byte");
}

TEST_F(TokenFileTest, ClearErrors) {
  expect_io_error([&] { TokenFile::open(dir_ / "missing.bin"); }, "missing.bin\": cannot open");
  const auto text = dir_ / "text.bin";
  std::ofstream(text) << "hello, this is not a token file at all, just text";
  expect_io_error([&] { TokenFile::open(text); }, "not a coat token file");
  const auto path = dir_ / "t.bin";
  std::vector<uint32_t> tokens = {1, 2, 3, 4, 5, 6};
  write_token_file(path, tokens, TokenWidth::U16, 7);
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 3);
  expect_io_error([&] { TokenFile::open(path); }, "(truncated)");
  write_token_file(path, tokens, TokenWidth::U16, 0);
  TokenFile f = TokenFile::open(path);
  std::vector<int32_t> out(6);
  expect_io_error([&] { f.read(0, out, 5); }, "token 5 at position 4 is past the model's vocabulary (vocab_size 5)");
  expect_io_error([&] { f.read(3, out); }, "past its end");
  expect_io_error([&] { write_token_file(path, tokens, TokenWidth::U16, 4); }, "token 4 at position 3");
  // The failed write left the earlier file intact.
  EXPECT_EQ(TokenFile::open(path).size(), 6u);
}

}  // namespace
}  // namespace coat::data
