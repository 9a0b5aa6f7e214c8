// CRC-32C: the published check values (RFC 3720 B.4 and the "123456789" check), incremental use, and
// agreement of the hardware and table implementations.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "coat/io/checksum.h"

namespace coat::io {
namespace {

uint32_t both(const std::vector<uint8_t>& bytes) {
  const uint32_t crc = crc32c(bytes.data(), bytes.size());
  EXPECT_EQ(crc, crc32c_extend_software(0, bytes.data(), bytes.size()));
  return crc;
}

TEST(Crc32c, KnownAnswers) {
  const std::string check = "123456789";
  EXPECT_EQ(crc32c(check.data(), check.size()), 0xE3069283u);
  EXPECT_EQ(crc32c_extend_software(0, check.data(), check.size()), 0xE3069283u);
  EXPECT_EQ(crc32c(nullptr, 0), 0u);
  // RFC 3720 (iSCSI), appendix B.4.
  EXPECT_EQ(both(std::vector<uint8_t>(32, 0x00)), 0x8A9136AAu);
  EXPECT_EQ(both(std::vector<uint8_t>(32, 0xFF)), 0x62A8AB43u);
  std::vector<uint8_t> ascending(32);
  std::iota(ascending.begin(), ascending.end(), uint8_t{0});
  EXPECT_EQ(both(ascending), 0x46DD794Eu);
  std::vector<uint8_t> descending(ascending.rbegin(), ascending.rend());
  EXPECT_EQ(both(descending), 0x113FDB5Cu);
}

TEST(Crc32c, Hex) {
  EXPECT_EQ(crc32c_hex(0xE3069283u), "e3069283");
  EXPECT_EQ(crc32c_hex(0x0000000Au), "0000000a");
  EXPECT_EQ(crc32c_hex(0u), "00000000");
}

TEST(Crc32c, IncrementalEqualsOneShotAtAnySplitAndAlignment) {
  std::mt19937 gen(7);
  std::vector<uint8_t> data(4099);
  for (uint8_t& b : data) b = static_cast<uint8_t>(gen());
  for (size_t start : {0, 1, 3, 7}) {
    for (size_t length : {0, 1, 7, 8, 9, 63, 64, 1000, 4092}) {
      const uint8_t* p = data.data() + start;
      const uint32_t whole = crc32c(p, length);
      EXPECT_EQ(whole, crc32c_extend_software(0, p, length)) << start << " " << length;
      for (size_t split : {size_t{0}, length / 3, length / 2, length}) {
        Crc32c crc;
        crc.update(p, split);
        crc.update(p + split, length - split);
        EXPECT_EQ(crc.value(), whole) << start << " " << length << " " << split;
        EXPECT_EQ(crc32c_extend_software(crc32c_extend_software(0, p, split), p + split, length - split),
                  whole);
      }
    }
  }
}

// crc32c_combine and crc32c_extend_zeros against the one-pass CRC: random data of odd lengths split at
// random points, empty pieces at both ends, and zero runs long enough to use many powers of x.
TEST(Crc32c, CombineOfPiecesEqualsTheOnePassCrc) {
  std::mt19937_64 gen(11);
  std::vector<uint8_t> data(200003);
  for (uint8_t& b : data) b = static_cast<uint8_t>(gen());
  for (int trial = 0; trial < 40; ++trial) {
    const size_t length = 1 + 2 * (gen() % (data.size() / 2));  // odd
    const size_t start = gen() % (data.size() - length + 1);
    const uint8_t* p = data.data() + start;
    const uint32_t whole = crc32c(p, length);
    for (size_t split : {size_t{0}, length, static_cast<size_t>(gen() % length)}) {
      EXPECT_EQ(crc32c_combine(crc32c(p, split), crc32c(p + split, length - split), length - split), whole)
          << "length " << length << " split " << split;
    }
    // Many pieces of odd sizes, folded left to right.
    uint32_t folded = 0;
    for (size_t at = 0; at < length;) {
      const size_t piece = std::min<size_t>(length - at, 1 + 2 * (gen() % 5000));
      folded = crc32c_combine(folded, crc32c(p + at, piece), piece);
      at += piece;
    }
    EXPECT_EQ(folded, whole) << "length " << length;
  }
  EXPECT_EQ(crc32c_combine(0xE3069283u, 0u, 0), 0xE3069283u);  // an empty B changes nothing
}

TEST(Crc32c, ExtendByZerosEqualsTheCrcOfWrittenZeros) {
  std::mt19937 gen(5);
  std::vector<uint8_t> data(70001);
  for (uint8_t& b : data) b = static_cast<uint8_t>(gen());
  for (size_t prefix : {size_t{0}, size_t{1}, size_t{255}, size_t{4097}}) {
    for (size_t zeros : {size_t{0}, size_t{1}, size_t{3}, size_t{255}, size_t{65537}}) {
      std::vector<uint8_t> padded(data.begin(), data.begin() + static_cast<std::ptrdiff_t>(prefix));
      padded.resize(prefix + zeros, 0);
      EXPECT_EQ(crc32c_extend_zeros(crc32c(data.data(), prefix), zeros), crc32c(padded.data(), padded.size()))
          << prefix << " + " << zeros << " zeros";
    }
  }
  // RFC 3720 B.4: 32 zero bytes.
  EXPECT_EQ(crc32c_extend_zeros(0, 32), 0x8A9136AAu);
}

}  // namespace
}  // namespace coat::io
