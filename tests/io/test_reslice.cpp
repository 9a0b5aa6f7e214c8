// Re-slicing by unit offset: the entries a slice covers (per element and per state group), and the pieces a
// ranged read takes from the rank files, for every split of a unit over 1-5 files against every other.
#include <gtest/gtest.h>

#include <numeric>

#include "coat/core/error.h"
#include "coat/io/reslice.h"
#include "expect_error.h"

namespace coat::io {
namespace {

using coat::test::expect_error_containing;

TEST(Reslice, EntriesOfASlice) {
  EXPECT_EQ(entries_of_slice(0, 300, 1).first, 0);
  EXPECT_EQ(entries_of_slice(0, 300, 1).count, 300);
  // Groups of 128: a slice of 300 elements from 256 covers groups 2, 3, 4 (the last one partly).
  const EntrySpan groups = entries_of_slice(256, 300, 128);
  EXPECT_EQ(groups.first, 2);
  EXPECT_EQ(groups.count, 3);
  EXPECT_EQ(entries_of_slice(256, 0, 128).count, 0);
  expect_error_containing([] { entries_of_slice(100, 28, 128); }, "inside a group of 128 elements");
}

TEST(Reslice, PiecesAcrossFiles) {
  // Three files holding [0, 4), [4, 10), [10, 12); stored out of order.
  const std::vector<EntrySpan> stored = {{4, 6}, {10, 2}, {0, 4}};
  const std::vector<ReslicePiece> pieces = reslice_pieces(stored, {3, 8});  // entries [3, 11)
  ASSERT_EQ(pieces.size(), 3u);
  EXPECT_EQ(pieces[0].source, 2u);
  EXPECT_EQ(pieces[0].source_offset, 3);
  EXPECT_EQ(pieces[0].dest_offset, 0);
  EXPECT_EQ(pieces[0].count, 1);
  EXPECT_EQ(pieces[1].source, 0u);
  EXPECT_EQ(pieces[1].source_offset, 0);
  EXPECT_EQ(pieces[1].dest_offset, 1);
  EXPECT_EQ(pieces[1].count, 6);
  EXPECT_EQ(pieces[2].source, 1u);
  EXPECT_EQ(pieces[2].dest_offset, 7);
  EXPECT_EQ(pieces[2].count, 1);
  EXPECT_TRUE(reslice_pieces(stored, {5, 0}).empty());
}

TEST(Reslice, GapsAndOverlapsAreErrors) {
  expect_error_containing<IoError>(
      [] {
        reslice_pieces({{0, 4}, {6, 4}}, {2, 6});
      },
      "entries [4, 8) of the wanted [2, 8) are in no rank file");
  expect_error_containing<IoError>([] { reslice_pieces({{0, 4}}, {0, 5}); }, "are in no rank file");
  expect_error_containing<InvalidArgument>(
      [] {
        reslice_pieces({{0, 4}, {3, 4}}, {0, 7});
      },
      "overlap at entry 3");
}

/// The shard rule (unit_shard.h): `world` ranks of shard_numel (a multiple of `align`) each, the last ones
/// padded past the unit.
std::vector<EntrySpan> shards(int64_t numel, int world, int64_t align, int64_t per_entry) {
  const int64_t per_rank = std::max(align, ((numel + world - 1) / world + align - 1) / align * align);
  std::vector<EntrySpan> out;
  for (int r = 0; r < world; ++r) {
    const int64_t begin = per_rank * r, owned = std::clamp<int64_t>(numel - begin, 0, per_rank);
    out.push_back(owned > 0 ? entries_of_slice(begin, owned, per_entry) : EntrySpan{});
  }
  return out;
}

// Any N-rank split read back by any M-rank split gives every entry from where N stored it, once: per element
// and per group of 128, with a unit whose end is not on a group boundary.
TEST(Reslice, EveryWorldSizeReadsEveryOther) {
  const int64_t numel = 9280;  // a multiple of 64, not of 128
  for (int64_t per_entry : {int64_t{1}, int64_t{128}}) {
    const int64_t whole = (numel + per_entry - 1) / per_entry;
    for (int n = 1; n <= 5; ++n) {
      const std::vector<EntrySpan> stored = shards(numel, n, 128, per_entry);
      std::vector<int64_t> value_of(static_cast<size_t>(whole), -1);  // the entry each stored slot holds
      for (const EntrySpan& s : stored)
        std::iota(value_of.begin() + s.first, value_of.begin() + s.end(), s.first);
      for (int m = 1; m <= 5; ++m) {
        for (const EntrySpan& want : shards(numel, m, 128, per_entry)) {
          std::vector<int64_t> got(static_cast<size_t>(want.count), -1);
          for (const ReslicePiece& p : reslice_pieces(stored, want)) {
            for (int64_t i = 0; i < p.count; ++i) {
              got[static_cast<size_t>(p.dest_offset + i)] =
                  value_of[static_cast<size_t>(stored[p.source].first + p.source_offset + i)];
            }
          }
          for (int64_t i = 0; i < want.count; ++i) {
            ASSERT_EQ(got[static_cast<size_t>(i)], want.first + i)
                << n << " -> " << m << " ranks, entry " << want.first + i;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace coat::io
