// Re-slicing: the overlaps of a wanted entry range with the spans that rank files store.
#include "coat/io/reslice.h"

#include <algorithm>
#include <numeric>

#include "coat/core/error.h"

namespace coat::io {

EntrySpan entries_of_slice(int64_t begin, int64_t owned, int64_t elements_per_entry) {
  COAT_ARG_CHECK(elements_per_entry >= 1 && begin >= 0 && owned >= 0, "reslice", "slice at element ", begin,
                 " of ", owned, " elements with ", elements_per_entry, " elements an entry is invalid");
  COAT_ARG_CHECK(begin % elements_per_entry == 0, "reslice", "a slice begins at element ", begin,
                 ", inside a group of ", elements_per_entry,
                 " elements (slices must begin on state group boundaries)");
  const int64_t first = begin / elements_per_entry;
  return {first, (begin + owned + elements_per_entry - 1) / elements_per_entry - first};
}

std::vector<ReslicePiece> reslice_pieces(const std::vector<EntrySpan>& stored, EntrySpan wanted) {
  COAT_ARG_CHECK(wanted.first >= 0 && wanted.count >= 0, "reslice", "entries [", wanted.first, ", ",
                 wanted.end(), ") are not a range");
  std::vector<size_t> order(stored.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return stored[a].first < stored[b].first; });
  std::vector<ReslicePiece> pieces;
  int64_t covered = wanted.first;  // everything before this entry is filled
  int64_t previous_end = 0;
  for (size_t i : order) {
    const EntrySpan& s = stored[i];
    if (s.count == 0) continue;
    COAT_ARG_CHECK(s.first >= previous_end, "reslice", "stored spans overlap at entry ", s.first);
    previous_end = s.end();
    const int64_t lo = std::max(s.first, wanted.first), hi = std::min(s.end(), wanted.end());
    if (lo >= hi) continue;
    if (lo > covered) break;  // a gap: reported below
    pieces.push_back({i, lo - s.first, lo - wanted.first, hi - lo});
    covered = hi;
  }
  if (covered < wanted.end()) {
    throw IoError(detail::concat("entries [", covered, ", ", wanted.end(), ") of the wanted [", wanted.first,
                                 ", ", wanted.end(), ") are in no rank file"));
  }
  return pieces;
}

}  // namespace coat::io
