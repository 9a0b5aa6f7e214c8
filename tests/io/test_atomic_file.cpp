// Atomic file writes: replacement, temporary files cleaned up, and an existing file untouched when the
// writer fails half-way.
#include <gtest/gtest.h>

#include "expect_error.h"
#include "io_test_util.h"

#include <sys/stat.h>

#include <stdexcept>
#include <string>

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

ino_t inode_of(const std::filesystem::path& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_ino;
}

// A recycled file is renamed into place (same inode), overwritten, cut to or grown to the size resize() gives,
// and committed under the target's name; its old bytes stay only where nothing was written.
TEST_F(AtomicFileTest, RecycledFilesAreOverwrittenInPlace) {
  for (const size_t old_size : {size_t{10000}, size_t{100}}) {
    const auto old = dir_ / ("old_" + std::to_string(old_size));
    write_string_atomically(old, std::string(old_size, 'o'));
    const ino_t inode = inode_of(old);
    const auto target = dir_ / ("new_" + std::to_string(old_size));
    write_file_atomically(
        target,
        [&](AtomicFile& f) {
          EXPECT_EQ(f.recycled_bytes(), old_size);
          EXPECT_FALSE(std::filesystem::exists(old));
          f.resize(1000);
          f.write_at(0, "new", 3);
          f.write_at(997, "end", 3);
        },
        old);
    EXPECT_EQ(inode_of(target), inode) << old_size;
    const std::string got = test::read_file_text(target);
    ASSERT_EQ(got.size(), 1000u);
    EXPECT_EQ(got.substr(0, 3), "new");
    EXPECT_EQ(got.substr(997), "end");
    // Between the writes: the old bytes where the old file had them, zeros past its end.
    const std::string middle = got.substr(3, 994);
    const size_t kept = std::min<size_t>(old_size, 997) - 3;
    EXPECT_EQ(middle.substr(0, kept), std::string(kept, 'o')) << old_size;
    EXPECT_EQ(middle.substr(kept), std::string(994 - kept, '\0')) << old_size;
  }
}

TEST_F(AtomicFileTest, AMissingRecycledFileGivesANewOne) {
  write_file_atomically(
      dir_ / "x.bin",
      [](AtomicFile& f) {
        EXPECT_EQ(f.recycled_bytes(), 0u);
        f.write("abc");
      },
      dir_ / "gone.bin");
  EXPECT_EQ(test::read_file_text(dir_ / "x.bin"), "abc");
  // A directory is not recycled either.
  std::filesystem::create_directory(dir_ / "d");
  AtomicFile f(dir_ / "y.bin", dir_ / "d");
  EXPECT_EQ(f.recycled_bytes(), 0u);
  EXPECT_TRUE(std::filesystem::is_directory(dir_ / "d"));
}

TEST_F(AtomicFileTest, AFailedWriteRemovesTheRecycledFileWithItsTemporary) {
  write_string_atomically(dir_ / "target.bin", "kept");
  write_string_atomically(dir_ / "old.bin", "old bytes");
  EXPECT_ANY_THROW(write_file_atomically(
      dir_ / "target.bin", [](AtomicFile&) { throw std::runtime_error("fill failed"); }, dir_ / "old.bin"));
  EXPECT_EQ(test::read_file_text(dir_ / "target.bin"), "kept");
  EXPECT_EQ(files_in(dir_), 1u);
}

TEST_F(AtomicFileTest, ErrorsNameTheFile) {
  const auto missing = dir_ / "no_such_dir" / "f.json";
  coat::test::expect_error_containing([&] { write_string_atomically(missing, "{}"); }, "no_such_dir/f.json");
  coat::test::expect_error_containing([&] { fsync_directory(dir_ / "nope"); }, "nope");
  fsync_directory(dir_);
}

}  // namespace
}  // namespace coat::io
