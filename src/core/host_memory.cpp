#include "coat/core/host_memory.h"

#include <fstream>
#include <string>

#include "coat/core/error.h"

namespace coat {

uint64_t available_host_bytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key, unit;
  uint64_t kib = 0;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  return 0;
}

void check_host_memory_fits(uint64_t needed, uint64_t available, std::string_view what, std::string_view hint) {
  if (available == 0 || needed <= available) return;
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
  throw OutOfMemory(detail::concat(what, " needs ", needed, " bytes (", static_cast<double>(needed) / kGiB,
                                   " GiB) of host memory but the system has ", available, " bytes (",
                                   static_cast<double>(available) / kGiB, " GiB) available (MemAvailable); ",
                                   hint));
}

}  // namespace coat
