// The host memory the system can still give (Linux /proc/meminfo MemAvailable), and the check that a
// planned allocation fits in it: before pinning, so that a request for more than the machine has is a clear
// error instead of a visit from the OOM killer once the pages are touched.
#pragma once

#include <cstdint>
#include <string_view>

namespace coat {

/// MemAvailable in bytes; 0 where it cannot be read (then nothing can be checked).
uint64_t available_host_bytes();

/// OutOfMemory naming `what`, both sizes and `hint` when `needed` exceeds `available` (0: unknown, no check).
void check_host_memory_fits(uint64_t needed, uint64_t available, std::string_view what, std::string_view hint);

}  // namespace coat
