// CRC-32C: slicing-by-8 tables built at compile time, and the SSE4.2 crc32 instruction on x86-64 (chosen
// at run time, so one binary runs on every x86-64 CPU); combining the CRCs of pieces by GF(2) polynomial
// arithmetic (the method of zlib's crc32_combine).
#include "coat/io/checksum.h"

#include <array>
#include <bit>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define COAT_CRC32C_SSE42 1
#endif

namespace coat::io {
namespace {

constexpr uint32_t kPolyReflected = 0x82F63B78u;

using Tables = std::array<std::array<uint32_t, 256>, 8>;

constexpr Tables make_tables() {
  Tables t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ kPolyReflected : c >> 1;
    t[0][i] = c;
  }
  // t[k][i]: the CRC of byte i followed by k zero bytes, so eight bytes fold in one step.
  for (uint32_t i = 0; i < 256; ++i) {
    for (size_t k = 1; k < 8; ++k) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xFFu];
  }
  return t;
}

constexpr Tables kTables = make_tables();
static_assert(kTables[0][1] == 0xF26B8303u, "CRC-32C table");

// The raw register form: no pre/post inversion (callers add it).
uint32_t update_software(uint32_t state, const uint8_t* p, size_t n) {
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7u) != 0) {
    state = (state >> 8) ^ kTables[0][(state ^ *p++) & 0xFFu];
    --n;
  }
  while (n >= 8) {
    uint32_t lo, hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
    if constexpr (std::endian::native == std::endian::big) {
      lo = __builtin_bswap32(lo);
      hi = __builtin_bswap32(hi);
    }
    lo ^= state;
    state = kTables[7][lo & 0xFFu] ^ kTables[6][(lo >> 8) & 0xFFu] ^ kTables[5][(lo >> 16) & 0xFFu] ^
            kTables[4][lo >> 24] ^ kTables[3][hi & 0xFFu] ^ kTables[2][(hi >> 8) & 0xFFu] ^
            kTables[1][(hi >> 16) & 0xFFu] ^ kTables[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n-- > 0) state = (state >> 8) ^ kTables[0][(state ^ *p++) & 0xFFu];
  return state;
}

#ifdef COAT_CRC32C_SSE42
__attribute__((target("sse4.2"))) uint32_t update_sse42(uint32_t state, const uint8_t* p, size_t n) {
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7u) != 0) {
    state = _mm_crc32_u8(state, *p++);
    --n;
  }
  uint64_t wide = state;
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    wide = _mm_crc32_u64(wide, v);
    p += 8;
    n -= 8;
  }
  state = static_cast<uint32_t>(wide);
  while (n-- > 0) state = _mm_crc32_u8(state, *p++);
  return state;
}
#endif

// Polynomials modulo P in the reflected representation the CRC register uses: bit 31 is x^0, bit 0 x^31.
constexpr uint32_t kOne = 0x80000000u;  // x^0

// a * b modulo P.
constexpr uint32_t multiply_mod_p(uint32_t a, uint32_t b) {
  uint32_t product = 0;
  for (uint32_t bit = kOne; bit != 0; bit >>= 1) {
    if (a & bit) product ^= b;
    b = (b & 1u) ? (b >> 1) ^ kPolyReflected : b >> 1;  // b *= x
  }
  return product;
}

// kPowers[k] = x^(2^k) modulo P, for every k a byte count of up to 2^64 (times 8 bits) needs.
constexpr std::array<uint32_t, 67> make_powers() {
  std::array<uint32_t, 67> p{};
  p[0] = kOne >> 1;  // x^1
  for (size_t k = 1; k < p.size(); ++k) p[k] = multiply_mod_p(p[k - 1], p[k - 1]);
  return p;
}
constexpr std::array<uint32_t, 67> kPowers = make_powers();

// x^(8 * bytes) modulo P: the operator that appending `bytes` zero bytes applies to the CRC register.
uint32_t x_to_8n(uint64_t bytes) {
  uint32_t result = kOne;
  for (size_t k = 3; bytes != 0; bytes >>= 1, ++k) {
    if (bytes & 1u) result = multiply_mod_p(kPowers[k], result);
  }
  return result;
}

}  // namespace

// With register R(A) = ~crc32c(A), feeding B is linear in the register plus a term of B alone, so
// crc32c(A + B) = x^(8|B|) * crc32c(A) ^ crc32c(B): the pre- and post-inversions cancel.
uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t bytes_b) {
  return multiply_mod_p(x_to_8n(bytes_b), crc_a) ^ crc_b;
}

// Zero bytes add nothing of their own to the register: R(A + 0^n) = x^(8n) * R(A).
uint32_t crc32c_extend_zeros(uint32_t crc, uint64_t zeros) {
  return ~multiply_mod_p(x_to_8n(zeros), ~crc);
}

uint32_t crc32c_extend_software(uint32_t crc, const void* data, size_t bytes) {
  return ~update_software(~crc, static_cast<const uint8_t*>(data), bytes);
}

uint32_t crc32c_extend(uint32_t crc, const void* data, size_t bytes) {
#ifdef COAT_CRC32C_SSE42
  if (__builtin_cpu_supports("sse4.2")) return ~update_sse42(~crc, static_cast<const uint8_t*>(data), bytes);
#endif
  return crc32c_extend_software(crc, data, bytes);
}

uint32_t crc32c(const void* data, size_t bytes) {
  return crc32c_extend(0, data, bytes);
}

std::string crc32c_hex(uint32_t crc) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(8, '0');
  for (int i = 7; i >= 0; --i, crc >>= 4) out[static_cast<size_t>(i)] = kDigits[crc & 0xFu];
  return out;
}

}  // namespace coat::io
