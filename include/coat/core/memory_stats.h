// Memory accounting by category (weights, master weights, gradients, ...): current and peak bytes.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

namespace coat {

enum class MemoryCategory : uint8_t {
  Weights,
  MasterWeights,
  Gradients,
  OptimizerState,
  Activations,
  Workspace,
  Communication,
  CheckpointSnapshot,  ///< host copies of the state a checkpoint is written from (checkpoint.async)
  Other,
};
inline constexpr size_t kNumMemoryCategories = 9;

std::string_view memory_category_name(MemoryCategory c);

/// A snapshot of the counters.
struct MemoryReport {
  std::array<size_t, kNumMemoryCategories> current_bytes{};
  std::array<size_t, kNumMemoryCategories> peak_bytes{};
  size_t total_current_bytes = 0;
  size_t total_peak_bytes = 0;
  size_t reserved_bytes = 0;       // held from the system (device allocations incl. the cache)
  size_t peak_reserved_bytes = 0;
  uint64_t system_allocations = 0;  // cudaMalloc / aligned_alloc calls made so far
  uint64_t system_frees = 0;

  size_t current(MemoryCategory c) const { return current_bytes[static_cast<size_t>(c)]; }
  size_t peak(MemoryCategory c) const { return peak_bytes[static_cast<size_t>(c)]; }
  /// Multi-line table "category  current  peak" in MiB.
  std::string to_string() const;
};

/// Thread-safe counters updated by an allocator.
class MemoryStats {
 public:
  void on_allocate(MemoryCategory c, size_t bytes);
  void on_free(MemoryCategory c, size_t bytes);
  void on_reserve(size_t bytes);  // a system allocation
  void on_release(size_t bytes);  // a system free
  /// Resets every peak to the current value (e.g. after warm-up).
  void reset_peaks();
  MemoryReport report() const;

 private:
  mutable std::mutex mutex_;
  MemoryReport r_;
};

}  // namespace coat
