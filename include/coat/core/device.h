// Where a tensor lives: the CPU or CUDA device n.
#pragma once

#include <string>
#include <string_view>

namespace coat {

enum class DeviceKind { CPU, CUDA };

/// "cpu" | "cuda", as train.device spells it.
constexpr std::string_view to_string(DeviceKind kind) { return kind == DeviceKind::CPU ? "cpu" : "cuda"; }

struct Device {
  DeviceKind kind = DeviceKind::CPU;
  int index = 0;

  static Device cpu() { return {DeviceKind::CPU, 0}; }
  static Device cuda(int index = 0) { return {DeviceKind::CUDA, index}; }
  /// Parses "cpu", "cuda" or "cuda:N".
  static Device parse(std::string_view text);

  bool is_cpu() const { return kind == DeviceKind::CPU; }
  bool is_cuda() const { return kind == DeviceKind::CUDA; }
  std::string str() const;
  bool operator==(const Device&) const = default;
};

}  // namespace coat
