// Atomic file writes: replacement, temporary files cleaned up, and an existing file untouched when the
// writer fails half-way.
#include <gtest/gtest.h>

#include "expect_error.h"
#include "io_test_util.h"

#include <stdexcept>

#include "coat/core/error.h"
#include "coat/io/atomic_file.h"

namespace coat::io {
namespace {

using AtomicFileTest = test::TempDirTest;

size_t files_in(const std::filesystem::path& dir) {
  return static_cast<size_t>(std::distance(std::filesystem::directory_iterator(dir), {}));
}

TEST_F(AtomicFileTest, WritesAndReplacesLeavingNoTemporaryFile) {
  const auto path = dir_ / "config.json";
  write_string_atomically(path, "{\"a\": 1}\n");
  EXPECT_EQ(test::read_file_text(path), "{\"a\": 1}\n");
  write_string_atomically(path, "{}");
  EXPECT_EQ(test::read_file_text(path), "{}");
  EXPECT_EQ(files_in(dir_), 1u);
}

TEST_F(AtomicFileTest, TemporaryNameCarriesThePid) {
  AtomicFile file(dir_ / "x.bin");
  EXPECT_EQ(file.temp_path(), dir_ / ("x.bin.tmp." + std::to_string(::getpid())));
  EXPECT_TRUE(std::filesystem::exists(file.temp_path()));
  EXPECT_FALSE(std::filesystem::exists(dir_ / "x.bin"));
}

TEST_F(AtomicFileTest, ThrowingWriterLeavesTheOldFileIntact) {
  const auto path = dir_ / "weights.bin";
  write_string_atomically(path, "old contents");
  std::filesystem::path temp;
  EXPECT_THROW(write_file_atomically(path,
                                     [&](AtomicFile& file) {
                                       temp = file.temp_path();
                                       file.write(std::string(100000, 'n'));
                                       EXPECT_TRUE(std::filesystem::exists(temp));
                                       throw std::runtime_error("disk on fire");
                                     }),
               std::runtime_error);
  EXPECT_EQ(test::read_file_text(path), "old contents");
  EXPECT_FALSE(std::filesystem::exists(temp));
  EXPECT_EQ(files_in(dir_), 1u);
}

TEST_F(AtomicFileTest, ThrowingWriterCreatesNothingWithoutAnOldFile) {
  EXPECT_THROW(write_file_atomically(dir_ / "new.bin",
                                     [](AtomicFile& file) {
                                       file.write("partial");
                                       throw IoError("simulated");
                                     }),
               IoError);
  EXPECT_EQ(files_in(dir_), 0u);
}

TEST_F(AtomicFileTest, DestroyedWithoutCommitDiscards) {
  {
    AtomicFile file(dir_ / "a.bin");
    file.write("abc");
  }
  EXPECT_EQ(files_in(dir_), 0u);
}

TEST_F(AtomicFileTest, PadAndWriteAt) {
  const auto path = dir_ / "h.bin";
  write_file_atomically(path, [](AtomicFile& file) {
    file.pad_to(8);
    file.write("data");
    EXPECT_EQ(file.position(), 12u);
    file.write_at(0, "HEAD", 4);
    EXPECT_EQ(file.position(), 12u);
    coat::test::expect_error_containing([&] { file.write_at(10, "xyz", 3); }, "past the 12 bytes");
    coat::test::expect_error_containing([&] { file.pad_to(4); }, "before the position 12");
  });
  EXPECT_EQ(test::read_file_text(path), std::string("HEAD\0\0\0\0data", 12));
}

TEST_F(AtomicFileTest, UseAfterCommitIsAnError) {
  AtomicFile file(dir_ / "c.bin");
  file.commit();
  coat::test::expect_error_containing([&] { file.write("x"); }, "after commit()");
  coat::test::expect_error_containing([&] { file.commit(); }, "after commit()");
}

// What a writer killed before its commit leaves: `<target>.tmp.<pid>` files, and only those, are removed.
TEST_F(AtomicFileTest, StaleTemporariesOfKilledWritersAreRemoved) {
  write_string_atomically(dir_ / "config.json", "{}");
  for (const char* name : {"config.json.tmp.123", "config.json.tmp.4567", "config.json.tmp.12x",
                           "config.json.tmp.", "other.json.tmp.123", "config.json.old"}) {
    write_string_atomically(dir_ / name, "x");
  }
  EXPECT_EQ(
      remove_stale_temporaries(dir_ / "config.json"),
      (std::vector<std::filesystem::path>{dir_ / "config.json.tmp.123", dir_ / "config.json.tmp.4567"}));
  EXPECT_EQ(files_in(dir_), 5u);
  EXPECT_TRUE(std::filesystem::exists(dir_ / "config.json.tmp.12x"));
  EXPECT_TRUE(std::filesystem::exists(dir_ / "other.json.tmp.123"));
  EXPECT_TRUE(remove_stale_temporaries(dir_ / "config.json").empty());
}

TEST_F(AtomicFileTest, ErrorsNameTheFile) {
  const auto missing = dir_ / "no_such_dir" / "f.json";
  coat::test::expect_error_containing([&] { write_string_atomically(missing, "{}"); }, "no_such_dir/f.json");
  coat::test::expect_error_containing([&] { fsync_directory(dir_ / "nope"); }, "nope");
  fsync_directory(dir_);
}

}  // namespace
}  // namespace coat::io
