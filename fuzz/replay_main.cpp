// Runs a fuzz target's LLVMFuzzerTestOneInput over every file of the folders given, without libFuzzer: the
// normal build's replay of the seed corpora and of every crasher found so far (fuzz/regressions/), so that
// a fixed crash stays fixed in the GCC test suite too. Exit status 1 when an input throws (a crash under
// libFuzzer); sanitizer findings need the fuzz build (scripts/fuzz.sh).
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  int inputs = 0;
  for (int i = 1; i < argc; ++i) {
    if (!std::filesystem::is_directory(argv[i])) continue;
    for (const auto& entry : std::filesystem::directory_iterator(argv[i])) {
      if (!entry.is_regular_file()) continue;
      std::ifstream in(entry.path(), std::ios::binary);
      const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                                       std::istreambuf_iterator<char>());
      try {
        LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
      } catch (const std::exception& e) {
        std::fprintf(stderr, "FAIL: %s: %s\n", entry.path().c_str(), e.what());
        return 1;
      }
      ++inputs;
    }
  }
  std::printf("replayed %d inputs\n", inputs);
  return inputs > 0 ? 0 : 1;
}
