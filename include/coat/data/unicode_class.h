// The Unicode facts that the tokenizer.json encoder needs: the classes \p{L}, \p{N} and \s of the
// pre-tokenizers' regular expressions (a table generated once by scripts/make_unicode_classes.py from
// Python's unicodedata) and strict UTF-8 decoding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace coat::data {

enum UnicodeClassBits : uint8_t { kUnicodeLetter = 1, kUnicodeNumber = 2, kUnicodeWhiteSpace = 4 };

struct UnicodeClassRange {
  char32_t first, last;  ///< inclusive
  uint8_t classes;       ///< UnicodeClassBits
};

/// The generated table: sorted, disjoint ranges; code points outside them have no class.
std::span<const UnicodeClassRange> unicode_class_ranges();
/// The Unicode version of Python's unicodedata that made the table ("14.0.0").
std::string_view unicode_class_table_version();

/// UnicodeClassBits of `c`: Letter (general category L*), Number (N*), White_Space (the property, as
/// Oniguruma's \s and Rust's char::is_whitespace).
uint8_t unicode_class(char32_t c);
inline bool is_unicode_letter(char32_t c) {
  return unicode_class(c) & kUnicodeLetter;
}
inline bool is_unicode_number(char32_t c) {
  return unicode_class(c) & kUnicodeNumber;
}
inline bool is_unicode_white_space(char32_t c) {
  return unicode_class(c) & kUnicodeWhiteSpace;
}

/// Text as code points, with the byte offset where each begins (`offsets` has one more entry: the size).
struct Utf8Text {
  std::vector<char32_t> code_points;
  std::vector<size_t> offsets;
};

/// One step of strict UTF-8 decoding at s[i] (i < s.size()), by Unicode's Table 3-7 of well-formed byte
/// sequences (no overlong forms, surrogates or code points past U+10FFFF): `length` bytes spelling
/// `code_point`, or length 0 when s[i] starts no well-formed sequence; then `invalid` is the length of the
/// maximal ill-formed subpart there (what one U+FFFD replaces under "substitution of maximal subparts", as
/// Rust's from_utf8_lossy and Python's errors="replace" count it).
struct Utf8Step {
  size_t length = 0;
  char32_t code_point = 0;
  size_t invalid = 0;
};
Utf8Step utf8_step(std::string_view s, size_t i);

/// Decodes well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF);
/// InvalidArgument naming `what` and the byte offset of the first ill-formed sequence.
Utf8Text decode_utf8(std::string_view bytes, std::string_view what);
/// The byte offset of the first ill-formed UTF-8 sequence, or npos when `bytes` is well-formed.
size_t find_invalid_utf8(std::string_view bytes);
void append_utf8(std::string& out, char32_t c);

}  // namespace coat::data
