// The Python `tokenizers` library as a subprocess (scripts/hf_encode.py): encoding a prompt with a
// tokenizer.json whose features the native encoder (hf_encoder.h) lacks, and encoding and decoding as the
// reference that the tests hold HfEncoder and HfTokenizer to. python3 is looked up on PATH.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace coat::data {

/// Why Python cannot serve, or "" when python3 runs and imports `tokenizers` (for tests to skip with).
std::string hf_python_unavailable_reason(const std::filesystem::path& script);

/// The ids of `text` (with the post-processor's special tokens, e.g. BOS, when `add_special_tokens`).
/// Error with a HINT when python3 or the module is missing (pip install tokenizers, or give the prompt as
/// ids), or with the script's message when it fails.
std::vector<int32_t> hf_python_encode(const std::filesystem::path& script,
                                      const std::filesystem::path& tokenizer_json, std::string_view text,
                                      bool add_special_tokens = true);

/// The ids of each text, in one run of the script (the reference of the native encoder's tests).
std::vector<std::vector<int32_t>> hf_python_encode_many(const std::filesystem::path& script,
                                                        const std::filesystem::path& tokenizer_json,
                                                        const std::vector<std::string>& texts,
                                                        bool add_special_tokens = true);

/// The `tokenizers` library's decode of each id sequence.
std::vector<std::string> hf_python_decode(const std::filesystem::path& script,
                                          const std::filesystem::path& tokenizer_json,
                                          const std::vector<std::vector<int32_t>>& sequences,
                                          bool skip_special_tokens = true);

}  // namespace coat::data
