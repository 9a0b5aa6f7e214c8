// The host-memory check made before pinning the asynchronous checkpoint's buffers.
#include <gtest/gtest.h>

#include "coat/core/error.h"
#include "coat/core/host_memory.h"
#include "expect_error.h"

namespace coat {
namespace {

TEST(HostMemory, AvailableBytesAreReadOnLinux) {
  const uint64_t available = available_host_bytes();
  EXPECT_GT(available, uint64_t{1} << 20) << "MemAvailable unreadable or below 1 MiB";
}

TEST(HostMemory, MoreThanAvailableIsAnErrorNamingBothSizesAndTheWayOut) {
  EXPECT_NO_THROW(check_host_memory_fits(100, 100, "x", "y"));
  EXPECT_NO_THROW(check_host_memory_fits(uint64_t{1} << 50, 0, "x", "y"));  // unknown: not checked
  test::expect_error_containing<OutOfMemory>(
      [] { check_host_memory_fits(uint64_t{3} << 30, uint64_t{1} << 30, "the snapshots", "turn them off"); },
      "the snapshots needs 3221225472 bytes (3 GiB) of host memory but the system has 1073741824 bytes (1 GiB) "
      "available (MemAvailable); turn them off");
}

}  // namespace
}  // namespace coat
