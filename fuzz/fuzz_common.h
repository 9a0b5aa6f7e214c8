// Helpers shared by the libFuzzer targets: a scratch file on tmpfs for the readers that open paths, and the
// rule that an input may be refused only with one of the library's typed errors (coat::Error, which names the
// file or key): any other exception escapes to libFuzzer and is reported as a crash.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "coat/core/error.h"

namespace coat::fuzz {

/// A per-process folder on tmpfs (/dev/shm when there is one) for the files a target writes; removed at exit
/// (libFuzzer ends a timed run with exit()).
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    const std::filesystem::path base =
        std::filesystem::exists("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path();
    std::filesystem::path d = base / ("coat_fuzz_" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch_dir(), ec);
    });
    return d;
  }();
  return dir;
}

/// Writes the bytes to `name` in the scratch folder (replacing it) and returns its path.
inline std::filesystem::path write_scratch(const std::string& name, const uint8_t* data, size_t size) {
  const std::filesystem::path path = scratch_dir() / name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return path;
}

/// Runs `body`; a coat::Error is a refusal with context (fine), anything else propagates.
template <typename Body>
void expect_only_library_errors(Body&& body) {
  try {
    body();
  } catch (const coat::Error&) {
  }
}

}  // namespace coat::fuzz
