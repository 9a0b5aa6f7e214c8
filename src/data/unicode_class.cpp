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

Utf8Step utf8_step(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char b0 = b(0);
  if (b0 < 0x80) return {1, b0, 0};
  size_t need = 0;                     // continuation bytes
  unsigned char lo = 0x80, hi = 0xBF;  // the second byte's range; later ones are 80..BF
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    if (b0 == 0xE0) lo = 0xA0;  // no overlong forms
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // nothing past U+10FFFF
  } else {
    return {0, 0, 1};
  }
  char32_t c = b0 & (0xFF >> (need + 2));
  size_t k = 0;
  for (; k < need && i + 1 + k < s.size(); ++k) {
    const unsigned char next = b(1 + k);
    if (next < (k == 0 ? lo : 0x80) || next > (k == 0 ? hi : 0xBF)) break;
    c = (c << 6) | (next & 0x3F);
  }
  if (k < need) return {0, 0, k + 1};
  return {need + 1, c, 0};
}

size_t find_invalid_utf8(std::string_view bytes) {
  for (size_t i = 0; i < bytes.size();) {
    const size_t len = utf8_step(bytes, i).length;
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
    const Utf8Step step = utf8_step(bytes, i);
    if (step.length == 0) {
      throw InvalidArgument(detail::concat(what, " is not valid UTF-8 at byte offset ", i, " (byte 0x",
                                           std::hex, static_cast<int>(static_cast<unsigned char>(bytes[i])),
                                           ")"));
    }
    text.code_points.push_back(step.code_point);
    text.offsets.push_back(i);
    i += step.length;
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
