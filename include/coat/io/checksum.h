// CRC-32C (Castagnoli, the iSCSI/ext4 polynomial 0x1EDC6F41, reflected 0x82F63B78): the checksum of
// checkpoint tensors. One-shot and incremental forms; SSE4.2 instructions where the CPU has them,
// slicing-by-8 tables otherwise (both give the same values; tests check it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace coat::io {

/// CRC-32C of `bytes` bytes ("123456789" -> 0xE3069283; no bytes -> 0).
uint32_t crc32c(const void* data, size_t bytes);
/// The CRC-32C of A followed by B, given crc = crc32c(A): crc32c_extend(crc32c(A), B) == crc32c(A + B).
uint32_t crc32c_extend(uint32_t crc, const void* data, size_t bytes);
/// The CRC-32C of A followed by B from crc_a = crc32c(A), crc_b = crc32c(B) and B's length alone (no bytes
/// read): crc32c(A + B). What lets threads checksum pieces of one tensor independently. O(log bytes_b).
uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t bytes_b);
/// The CRC-32C of A followed by `zeros` zero bytes, given crc = crc32c(A), without touching the zeros: the
/// padding of a tensor file. O(log zeros).
uint32_t crc32c_extend_zeros(uint32_t crc, uint64_t zeros);
/// The table-driven implementation alone (what crc32c uses without SSE4.2); exposed for tests.
uint32_t crc32c_extend_software(uint32_t crc, const void* data, size_t bytes);

/// Eight lower-case hex digits, as checkpoint indexes store checksums ("e3069283").
std::string crc32c_hex(uint32_t crc);

/// Incremental CRC-32C over data that arrives in pieces.
class Crc32c {
 public:
  void update(const void* data, size_t bytes) { crc_ = crc32c_extend(crc_, data, bytes); }
  uint32_t value() const { return crc_; }

 private:
  uint32_t crc_ = 0;
};

}  // namespace coat::io
