// Loss-mask files: the header and every entry checked in one pass when opened (with the counted entries and
// the checksum), ranges of targets masked and counted, and the streaming atomic writer.
#include "coat/data/loss_mask_file.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include "coat/core/error.h"
#include "coat/data/token_file.h"
#include "coat/io/checksum.h"

namespace coat::data {
namespace {

template <typename T>
T read_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

struct ScanResult {
  uint64_t counted = 0;
  uint32_t checksum = 0;
  std::optional<uint64_t> bad_position;  ///< the first entry other than 0 or 1
};

// Block sums and maxima (loops the compiler vectorises) and the CRC of each block, in one pass over memory.
ScanResult scan(const uint8_t* entries, uint64_t count) {
  constexpr uint64_t kBlock = 1 << 14;
  ScanResult r;
  for (uint64_t start = 0; start < count; start += kBlock) {
    const uint64_t n = std::min(kBlock, count - start);
    const uint8_t* block = entries + start;
    uint8_t top = 0;
    uint32_t sum = 0;
    for (uint64_t i = 0; i < n; ++i) {
      top = std::max(top, block[i]);
      sum += block[i];
    }
    if (top > 1) {
      r.bad_position = start + static_cast<uint64_t>(std::find_if(block, block + n, [](uint8_t v) { return v > 1; }) - block);
      return r;
    }
    r.counted += sum;
    r.checksum = io::crc32c_extend(r.checksum, block, n);
  }
  return r;
}

}  // namespace

LossMaskFile LossMaskFile::open(const std::filesystem::path& path) {
  LossMaskFile f;
  f.file_ = io::MappedFile::open(path, "loss-mask file");
  const uint8_t* bytes = f.file_.data();
  const uint64_t size = f.file_.size();
  if (size < LossMaskHeader::kBytes || std::memcmp(bytes, LossMaskHeader::kMagic, 8) != 0) {
    throw IoError(detail::concat("loss-mask file ", path, ": not a coat loss-mask file (expected the 8-byte magic ",
                                 "'COATMSK' and a 24-byte header; scripts/prepare_data.py sft writes them)"));
  }
  const uint32_t version = read_le<uint32_t>(bytes + 8);
  if (version != LossMaskHeader::kVersion) {
    throw IoError(detail::concat("loss-mask file ", path, ": format version ", version, ", this build reads version ",
                                 LossMaskHeader::kVersion));
  }
  const uint32_t reserved = read_le<uint32_t>(bytes + 12);
  if (reserved != 0) {
    throw IoError(detail::concat("loss-mask file ", path, ": the reserved header field (bytes 12-15) is ", reserved,
                                 ", expected 0 (a damaged header?)"));
  }
  f.count_ = read_le<uint64_t>(bytes + 16);
  const uint64_t payload = size - LossMaskHeader::kBytes;
  if (f.count_ != payload) {
    throw IoError(detail::concat("loss-mask file ", path, ": header says ", f.count_, " entries but the file holds ",
                                 payload, " after its header", payload < f.count_ ? " (truncated)" : ""));
  }
  f.entries_ = bytes + LossMaskHeader::kBytes;
  const ScanResult scanned = scan(f.entries_, f.count_);
  if (scanned.bad_position) {
    throw IoError(detail::concat("loss-mask file ", path, ": entry ", *scanned.bad_position, " is ",
                                 static_cast<int>(f.entries_[*scanned.bad_position]),
                                 ", expected 0 (not in the loss) or 1 (in the loss)"));
  }
  f.counted_ = scanned.counted;
  f.checksum_ = scanned.checksum;
  return f;
}

LossMaskFile LossMaskFile::open_for(const std::filesystem::path& path, const TokenFile& tokens) {
  LossMaskFile f = open(path);
  if (f.size() != tokens.size()) {
    throw IoError(detail::concat("loss-mask file ", path, " has ", f.size(), " entries but token file ",
                                 tokens.path(), " holds ", tokens.size(),
                                 " tokens: a mask goes with one token file (one entry per token)"));
  }
  return f;
}

void LossMaskFile::check_range(uint64_t start, uint64_t n) const {
  if (start > count_ || n > count_ - start) {
    throw IoError(detail::concat("loss-mask file ", path(), ": read of ", n, " entries at ", start,
                                 " is past its end (", count_, " entries)"));
  }
}

uint64_t LossMaskFile::counted_in(uint64_t start, uint64_t n) const {
  check_range(start, n);
  uint64_t sum = 0;
  for (uint64_t i = 0; i < n; ++i) sum += entries_[start + i];
  return sum;
}

void LossMaskFile::mask_targets(uint64_t start, std::span<int32_t> targets, int32_t ignore_index) const {
  check_range(start, targets.size());
  for (size_t i = 0; i < targets.size(); ++i) {
    if (entries_[start + i] == 0) targets[i] = ignore_index;
  }
}

LossMaskWriter::LossMaskWriter(const std::filesystem::path& path) : file_(path) {
  const uint8_t header[LossMaskHeader::kBytes] = {};  // the count is written by commit()
  file_.write(header, sizeof(header));
}

void LossMaskWriter::append(std::span<const uint8_t> entries) {
  const auto bad = std::find_if(entries.begin(), entries.end(), [](uint8_t v) { return v > 1; });
  if (bad != entries.end()) {
    throw InvalidArgument(detail::concat("[LossMaskWriter] ", file_.target(), ": entry ",
                                         count_ + static_cast<uint64_t>(bad - entries.begin()), " is ",
                                         static_cast<int>(*bad), ", expected 0 or 1"));
  }
  file_.write(entries.data(), entries.size());
  count_ += entries.size();
}

void LossMaskWriter::commit() {
  uint8_t header[LossMaskHeader::kBytes] = {};
  std::memcpy(header, LossMaskHeader::kMagic, 8);
  const uint32_t version = LossMaskHeader::kVersion;
  std::memcpy(header + 8, &version, 4);
  std::memcpy(header + 16, &count_, 8);
  file_.write_at(0, header, sizeof(header));
  file_.commit();
}

void write_loss_mask_file(const std::filesystem::path& path, std::span<const uint8_t> entries) {
  LossMaskWriter writer(path);
  writer.append(entries);
  writer.commit();
}

}  // namespace coat::data
