// The training config: a JSON document (comments allowed, as coat-train reads it) and `--set` overrides.
// Input: the document, then each override after a NUL byte.
#include <optional>
#include <string>
#include <vector>

#include "coat/train/train_config.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    const size_t nul = input.find('\0', start);
    parts.push_back(input.substr(start, nul == std::string::npos ? std::string::npos : nul - start));
    if (nul == std::string::npos) break;
    start = nul + 1;
  }
  const std::string document = parts.front();
  parts.erase(parts.begin());
  std::optional<coat::train::TrainConfig> parsed;
  coat::fuzz::expect_only_library_errors(
      [&] { parsed = coat::train::parse_train_config_text(document, parts, "fuzz.json"); });
  if (!parsed) return 0;
  (void)parsed->model.parameter_count();
  // An accepted config's resolved document (what the run directory and checkpoints keep) parses again, to
  // itself: an exception here is a crash.
  const coat::train::TrainConfig again = coat::train::parse_train_config(parsed->resolved, "resolved");
  if (again.resolved != parsed->resolved) __builtin_trap();
  return 0;
}
