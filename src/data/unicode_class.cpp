// Class lookup in the generated range table (ASCII answered first) and strict UTF-8 decoding.
#include "coat/data/unicode_class.h"

#include <algorithm>

#include "coat/core/error.h"

namespace coat::data {

uint8_t unicode_class(char32_t c) {
  if (c < 0x80) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return kUnicodeLetter;
    if (c >= '0' && c <= '9') return kUnicodeNumber;
    return (c == ' ' || (c >= 0x09 && c <= 0x0D)) ? kUnicodeWhiteSpace : 0;
  }
  const std::span<const UnicodeClassRange> ranges = unicode_class_ranges();
  auto it = std::upper_bound(ranges.begin(), ranges.end(), c,
                             [](char32_t v, const UnicodeClassRange& r) { return v < r.first; });
  if (it == ranges.begin()) return 0;
  --it;
  return c <= it->last ? it->classes : 0;
}

namespace {

/// The length of the well-formed sequence at `i` and its code point, or length 0 when ill-formed
/// (Unicode's Table 3-7 of well-formed byte sequences).
size_t decode_one(std::string_view s, size_t i, char32_t* out) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char b0 = b(0);
  if (b0 < 0x80) {
    *out = b0;
    return 1;
  }
  size_t len = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;  // no overlong forms
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // nothing past U+10FFFF
  } else {
    return 0;
  }
  if (i + len > s.size() || b(1) < lo || b(1) > hi) return 0;
  char32_t c = b0 & (0xFF >> (len + 1));
  for (size_t k = 1; k < len; ++k) {
    if (k > 1 && (b(k) < 0x80 || b(k) > 0xBF)) return 0;
    c = (c << 6) | (b(k) & 0x3F);
  }
  *out = c;
  return len;
}

}  // namespace

size_t find_invalid_utf8(std::string_view bytes) {
  char32_t c = 0;
  for (size_t i = 0; i < bytes.size();) {
    const size_t len = decode_one(bytes, i, &c);
    if (len == 0) return i;
    i += len;
  }
  return std::string_view::npos;
}

Utf8Text decode_utf8(std::string_view bytes, std::string_view what) {
  Utf8Text text;
  text.code_points.reserve(bytes.size());
  text.offsets.reserve(bytes.size() + 1);
  for (size_t i = 0; i < bytes.size();) {
    char32_t c = 0;
    const size_t len = decode_one(bytes, i, &c);
    if (len == 0) {
      throw InvalidArgument(detail::concat(what, " is not valid UTF-8 at byte offset ", i, " (byte 0x",
                                           std::hex, static_cast<int>(static_cast<unsigned char>(bytes[i])),
                                           ")"));
    }
    text.code_points.push_back(c);
    text.offsets.push_back(i);
    i += len;
  }
  text.offsets.push_back(bytes.size());
  return text;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

}  // namespace coat::data
