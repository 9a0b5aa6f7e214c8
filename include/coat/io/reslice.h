// Re-slicing a flat unit tensor that ranks stored in pieces: which bytes of which rank file hold a range of
// the whole tensor. A rank file stores its slice of a unit, elements [begin, begin + owned); a state tensor
// with one entry per group of G elements (FP8 scales, exponents, centres) stores the groups that slice
// covers, entries [begin / G, ceil((begin + owned) / G)). Slices begin on group boundaries (the shard
// alignment is a multiple of the state group), so groups follow unit offsets and never straddle two files.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace coat::io {

/// Entries [first, first + count) of a whole unit tensor.
struct EntrySpan {
  int64_t first = 0;
  int64_t count = 0;
  int64_t end() const { return first + count; }
};

/// The entries that the unit elements [begin, begin + owned) cover, at `elements_per_entry` elements an entry
/// (1: one entry per element). InvalidArgument when begin is not on an entry boundary.
EntrySpan entries_of_slice(int64_t begin, int64_t owned, int64_t elements_per_entry);

/// One copy of a ranged read: `count` entries from source `source` (an index into the spans given), starting
/// at its entry `source_offset`, into the destination starting at `dest_offset`.
struct ReslicePiece {
  size_t source = 0;
  int64_t source_offset = 0;
  int64_t dest_offset = 0;
  int64_t count = 0;
};

/// The pieces that fill entries `wanted` of the whole tensor from the stored spans (one per rank file, in any
/// order, disjoint), ordered by destination offset. IoError when some wanted entry is in no span ("entries
/// [a, b) are in no rank file"), InvalidArgument when the spans overlap.
std::vector<ReslicePiece> reslice_pieces(const std::vector<EntrySpan>& stored, EntrySpan wanted);

}  // namespace coat::io
