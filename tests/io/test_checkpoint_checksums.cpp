// How often a checkpoint's bytes are checksummed (CheckpointReader::checksummed_bytes): a rank file that
// passed verify_file, or that every rank file passed on some process (mark_all_files_verified, a resume's
// agreement), is read without checksumming its tensors again; any other read verifies each tensor it touches
// once, and still finds a damaged one.
#include <gtest/gtest.h>

#include "expect_error.h"
#include "io_test_util.h"

#include "coat/core/error.h"
#include "coat/io/checkpoint.h"
#include "coat/io/checkpoint_manifest.h"
#include "coat/io/checkpoint_reader.h"
#include "coat/ops/creation.h"

namespace coat::io {
namespace {

using coat::test::expect_error_containing;
namespace fs = std::filesystem;

class CheckpointChecksumsTest : public test::TempDirTest {
 protected:
  /// A format-2 checkpoint of two rank files: unit "embed" (a 3x4 master, 12 entries) split 8 + 4, with a
  /// scale per 4 entries, random bytes.
  void SetUp() override {
    test::TempDirTest::SetUp();
    CheckpointLayout layout;
    layout.units = {{"embed", 12, {{"model.embed_tokens.weight", {3, 4}, 0}}}};
    layout.kinds = {{"master", DType::F32, 1}, {"exp_avg.scale", DType::F32, 4}};
    layout.files = {{{0, 8}}, {{8, 4}}};
    const fs::path staging = begin_checkpoint(dir_, 5);
    std::vector<RankFileRecord> records;
    for (int rank = 0; rank < 2; ++rank) {
      const int64_t entries = rank == 0 ? 8 : 4, scales = rank == 0 ? 2 : 1;
      const auto seed = static_cast<uint32_t>(10 * rank);
      records.push_back(write_checkpoint_rank(
          staging, rank,
          {{"embed.master", test::random_bytes_tensor(ctx_, {entries}, DType::F32, seed)},
           {"embed.exp_avg.scale", test::random_bytes_tensor(ctx_, {scales}, DType::F32, seed + 1)}}));
    }
    checkpoint_ = finish_checkpoint(dir_, 5, {{"world_size", 2}}, layout, records);
  }
  fs::path rank_file(int index) const { return checkpoint_ / checkpoint_rank_file_name(index); }
  uint64_t file_bytes(int index) const { return read_manifest(checkpoint_).files.at(index).bytes; }
  uint64_t tensor_bytes(int index) const {
    uint64_t bytes = 0;
    const TensorFileReader reader = TensorFileReader::open(rank_file(index));  // outlives the loop over its entries
    for (const TensorFileEntry& e : reader.entries()) bytes += e.bytes;
    return bytes;
  }
  /// Every tensor of the one-process layout, read through `ck`.
  static void read_everything(const CheckpointReader& ck) {
    for (const CheckpointTensorInfo& info : ck.tensors()) ck.read(info.name);
  }
  void flip_byte_of(const std::string& tensor, int index) const {
    std::vector<uint8_t> bytes = test::read_file_bytes(rank_file(index));
    bytes.at(TensorFileReader::open(rank_file(index)).entry(tensor).offset + 2) ^= 0x20;
    test::write_file_bytes(rank_file(index), bytes);
  }

  ContextPtr ctx_ = std::make_shared<CpuContext>();
  fs::path checkpoint_;
};

TEST_F(CheckpointChecksumsTest, AnUnverifiedReaderChecksumsEachTensorItReadsOnce) {
  const CheckpointReader ck = CheckpointReader::open(checkpoint_);
  EXPECT_EQ(ck.checksummed_bytes(), 0u);
  read_everything(ck);
  EXPECT_EQ(ck.checksummed_bytes(), tensor_bytes(0) + tensor_bytes(1));
  read_everything(ck);  // verified once per reader
  EXPECT_EQ(ck.checksummed_bytes(), tensor_bytes(0) + tensor_bytes(1));
}

// verify_all checksums every byte of every file once (the whole file against COMPLETE); the reads after it
// checksum nothing. A file verified whole here is read without checks, the other still tensor by tensor.
TEST_F(CheckpointChecksumsTest, AVerifiedFileIsReadWithoutChecksummingAgain) {
  const CheckpointReader all = CheckpointReader::open(checkpoint_, 2);
  all.verify_all();
  EXPECT_EQ(all.checksummed_bytes(), file_bytes(0) + file_bytes(1));
  read_everything(all);
  EXPECT_EQ(all.checksummed_bytes(), file_bytes(0) + file_bytes(1));

  const CheckpointReader first = CheckpointReader::open(checkpoint_);
  first.verify_file(0);
  EXPECT_EQ(first.checksummed_bytes(), file_bytes(0));
  read_everything(first);
  EXPECT_EQ(first.checksummed_bytes(), file_bytes(0) + tensor_bytes(1));
}

// What a rank of a resume does once every rank verified its share: files it did not verify itself (file 1
// here, opened before and after the mark) are read without checksums.
TEST_F(CheckpointChecksumsTest, FilesMarkedVerifiedAreReadWithoutChecksums) {
  const CheckpointReader ck = CheckpointReader::open(checkpoint_);
  ck.verify_file(0);
  ck.mark_all_files_verified();
  read_everything(ck);
  EXPECT_EQ(ck.checksummed_bytes(), file_bytes(0));
  const CheckpointReader other = CheckpointReader::open(checkpoint_);  // another rank: verified nothing
  other.file(1);                                                       // opened before the mark
  other.mark_all_files_verified();
  read_everything(other);
  EXPECT_EQ(other.checksummed_bytes(), 0u);
}

// Damage: verify_file finds it and leaves the file unverified, so a read still finds it too; a reader that
// was not told the files are verified finds it when it reads the tensor, as before.
TEST_F(CheckpointChecksumsTest, ADamagedTensorIsFoundByEveryReaderNotToldOtherwise) {
  flip_byte_of("embed.master", 1);
  const CheckpointReader ck = CheckpointReader::open(checkpoint_);
  EXPECT_NO_THROW(ck.verify_file(0));
  expect_error_containing([&] { ck.verify_file(1); }, "checksum mismatch in tensor 'embed.master'");
  expect_error_containing([&] { ck.read("model.embed_tokens.weight"); },
                          "checksum mismatch in tensor 'embed.master'");
  const CheckpointReader fresh = CheckpointReader::open(checkpoint_);
  expect_error_containing([&] { read_everything(fresh); }, "checksum mismatch in tensor 'embed.master'");
  Tensor first_file_part = Tensor::empty(ctx_, {8}, DType::F32);
  EXPECT_NO_THROW(fresh.read_range_into("model.embed_tokens.weight", 0, first_file_part));
}

}  // namespace
}  // namespace coat::io
