// Loss-mask files: the byte layout of the contract with scripts/prepare_data.py, streaming round trips, the
// counts and masking of ranges, and an error naming the file and what is wrong for every kind of bad file.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "coat/core/error.h"
#include "coat/data/loss_mask_file.h"
#include "coat/data/token_file.h"
#include "coat/io/checksum.h"
#include "expect_error.h"

namespace coat::data {
namespace {

namespace fs = std::filesystem;

class LossMaskFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("coat_loss_mask_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  /// A file laid out by hand as the contract says: magic, version, reserved, count, then the entries.
  fs::path raw_file(const std::string& name, const char* magic, uint32_t version, uint32_t reserved, uint64_t count,
                    const std::vector<uint8_t>& entries) const {
    std::vector<uint8_t> bytes(24);
    std::memcpy(bytes.data(), magic, 8);
    std::memcpy(bytes.data() + 8, &version, 4);
    std::memcpy(bytes.data() + 12, &reserved, 4);
    std::memcpy(bytes.data() + 16, &count, 8);
    bytes.insert(bytes.end(), entries.begin(), entries.end());
    const fs::path path = dir_ / name;
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                                static_cast<std::streamsize>(bytes.size()));
    return path;
  }
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

  fs::path dir_;
};

std::vector<uint8_t> random_mask(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> m(n);
  for (uint8_t& v : m) v = static_cast<uint8_t>(rng() % 3 != 0);
  return m;
}

TEST_F(LossMaskFileTest, StreamedWriteReadsBackByteForByte) {
  const std::vector<uint8_t> mask = random_mask(40007, 3);  // more than two scan blocks
  const fs::path path = dir_ / "corpus.bin.mask";
  {
    LossMaskWriter w(path);
    w.append(std::span(mask).first(12345));
    w.append(std::span(mask).subspan(12345));
    EXPECT_EQ(w.count(), mask.size());
    w.commit();
  }
  EXPECT_EQ(files(), std::vector<std::string>{"corpus.bin.mask"});  // no temporary file left
  // The bytes are the contract's layout.
  std::ifstream in(path, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_EQ(bytes.size(), 24 + mask.size());
  EXPECT_EQ(std::memcmp(bytes.data(), "COATMSK\0", 8), 0);
  uint32_t version = 0, reserved = 7;
  uint64_t count = 0;
  std::memcpy(&version, bytes.data() + 8, 4);
  std::memcpy(&reserved, bytes.data() + 12, 4);
  std::memcpy(&count, bytes.data() + 16, 8);
  EXPECT_EQ(version, 1u);
  EXPECT_EQ(reserved, 0u);
  EXPECT_EQ(count, mask.size());
  EXPECT_TRUE(std::equal(mask.begin(), mask.end(), bytes.begin() + 24));

  const LossMaskFile f = LossMaskFile::open(path);
  EXPECT_EQ(f.size(), mask.size());
  EXPECT_EQ(f.counted(), static_cast<uint64_t>(std::count(mask.begin(), mask.end(), 1)));
  EXPECT_EQ(f.checksum(), io::crc32c(mask.data(), mask.size()));
  for (size_t i : {size_t{0}, size_t{1}, size_t{16384}, mask.size() - 1}) EXPECT_EQ(f.counts(i), mask[i] == 1) << i;
  EXPECT_EQ(f.counted_in(100, 500), static_cast<uint64_t>(std::count(mask.begin() + 100, mask.begin() + 600, 1)));
  std::vector<int32_t> targets(300);
  for (size_t i = 0; i < targets.size(); ++i) targets[i] = static_cast<int32_t>(i + 5);
  f.mask_targets(20000, targets, -1);
  for (size_t i = 0; i < targets.size(); ++i) {
    EXPECT_EQ(targets[i], mask[20000 + i] ? static_cast<int32_t>(i + 5) : -1) << i;
  }
}

TEST_F(LossMaskFileTest, EveryBadFileIsNamedWithWhatIsWrong) {
  const std::vector<uint8_t> ok = {0, 1, 1, 0, 1, 0, 0, 1, 1, 1};
  test::expect_error_containing<IoError>([&] { LossMaskFile::open(dir_ / "missing.mask"); },
                                         "loss-mask file \"" + (dir_ / "missing.mask").string() + "\": cannot open");
  const fs::path magic = raw_file("magic.mask", "COATTOK\0", 1, 0, ok.size(), ok);
  test::expect_error_containing<IoError>([&] { LossMaskFile::open(magic); }, "magic.mask\": not a coat loss-mask file");
  const fs::path tiny = raw_file("short.mask", "COATMSK\0", 1, 0, 0, {});
  fs::resize_file(tiny, 20);  // shorter than the header
  test::expect_error_containing<IoError>([&] { LossMaskFile::open(tiny); }, "short.mask\": not a coat loss-mask file");
  const fs::path version = raw_file("version.mask", "COATMSK\0", 2, 0, ok.size(), ok);
  test::expect_error_containing<IoError>([&] { LossMaskFile::open(version); },
                                         "version.mask\": format version 2, this build reads version 1");
  const fs::path reserved = raw_file("reserved.mask", "COATMSK\0", 1, 5, ok.size(), ok);
  test::expect_error_containing<IoError>([&] { LossMaskFile::open(reserved); },
                                         "reserved.mask\": the reserved header field (bytes 12-15) is 5");
  const fs::path truncated = raw_file("truncated.mask", "COATMSK\0", 1, 0, ok.size() + 3, ok);
  test::expect_error_containing<IoError>([&] { LossMaskFile::open(truncated); },
                                         "truncated.mask\": header says 13 entries but the file holds 10 after its "
                                         "header (truncated)");
  const fs::path longer = raw_file("longer.mask", "COATMSK\0", 1, 0, ok.size() - 1, ok);
  test::expect_error_containing<IoError>([&] { LossMaskFile::open(longer); },
                                         "longer.mask\": header says 9 entries but the file holds 10");
  // A byte that is neither 0 nor 1, in the first block and past it: its position and value.
  std::vector<uint8_t> bad = ok;
  bad[7] = 2;
  const fs::path value = raw_file("value.mask", "COATMSK\0", 1, 0, bad.size(), bad);
  test::expect_error_containing<IoError>([&] { LossMaskFile::open(value); },
                                         "value.mask\": entry 7 is 2, expected 0 (not in the loss) or 1");
  std::vector<uint8_t> far = random_mask(50000, 9);
  far[33333] = 255;
  const fs::path far_path = raw_file("far.mask", "COATMSK\0", 1, 0, far.size(), far);
  test::expect_error_containing<IoError>([&] { LossMaskFile::open(far_path); }, "entry 33333 is 255");
}

TEST_F(LossMaskFileTest, GoesWithATokenFileOfTheSameCount) {
  const std::vector<uint32_t> tokens = {3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13};
  write_token_file(dir_ / "corpus.bin", tokens, TokenWidth::U16, 64);
  const TokenFile t = TokenFile::open(dir_ / "corpus.bin");
  const std::vector<uint8_t> mask(tokens.size(), 1);
  write_loss_mask_file(dir_ / "corpus.bin.mask", mask);
  EXPECT_EQ(LossMaskFile::open_for(dir_ / "corpus.bin.mask", t).counted(), tokens.size());
  write_loss_mask_file(dir_ / "other.mask", std::span(mask).first(10));
  test::expect_error_containing<IoError>(
      [&] { LossMaskFile::open_for(dir_ / "other.mask", t); },
      "other.mask\" has 10 entries but token file \"" + (dir_ / "corpus.bin").string() + "\" holds 11 tokens");
}

TEST_F(LossMaskFileTest, RangesPastTheEndAreRefused) {
  write_loss_mask_file(dir_ / "m.mask", std::vector<uint8_t>{1, 0, 1, 1});
  const LossMaskFile f = LossMaskFile::open(dir_ / "m.mask");
  EXPECT_EQ(f.counted_in(1, 3), 2u);
  EXPECT_EQ(f.counted_in(4, 0), 0u);
  test::expect_error_containing<IoError>([&] { f.counted_in(2, 3); }, "read of 3 entries at 2 is past its end (4");
  std::vector<int32_t> targets(2, 9);
  test::expect_error_containing<IoError>([&] { f.mask_targets(3, targets, -1); }, "read of 2 entries at 3");
  EXPECT_EQ(targets, (std::vector<int32_t>{9, 9}));  // untouched
}

TEST_F(LossMaskFileTest, TheWriterRefusesOtherValuesAndLeavesNothingBehind) {
  const fs::path path = dir_ / "m.mask";
  write_loss_mask_file(path, std::vector<uint8_t>{1, 1});
  {
    LossMaskWriter w(path);
    w.append(std::vector<uint8_t>{0, 1, 0});
    test::expect_error_containing<InvalidArgument>([&] { w.append(std::vector<uint8_t>{1, 3, 0}); },
                                                   "m.mask\": entry 4 is 3, expected 0 or 1");
    EXPECT_EQ(w.count(), 3u);  // nothing of the rejected span
  }  // destroyed without commit: the previous file stays, no temporary file
  EXPECT_EQ(files(), std::vector<std::string>{"m.mask"});
  EXPECT_EQ(LossMaskFile::open(path).size(), 2u);
  test::expect_error_containing<InvalidArgument>([&] { write_loss_mask_file(path, std::vector<uint8_t>{0, 7}); },
                                                 "entry 1 is 7");
  EXPECT_EQ(files(), std::vector<std::string>{"m.mask"});
  LossMaskWriter w(dir_ / "empty.mask");
  w.commit();
  EXPECT_EQ(LossMaskFile::open(dir_ / "empty.mask").size(), 0u);
  EXPECT_THROW(w.append(std::vector<uint8_t>{1}), InvalidArgument);
}

}  // namespace
}  // namespace coat::data
