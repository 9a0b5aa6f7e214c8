// HF tokenizer.json files on the decoding side (ids -> text), as the `tokenizers` library decodes them:
// every id becomes its added token's content or its model token (BPE, WordLevel, WordPiece: the "vocab"
// object; Unigram: the "vocab" list), special added tokens are dropped when asked, and the file's decoder
// chain (HfDecoder) makes the text. Llama-3's byte-level BPE and Llama-2's SentencePiece-style files
// (▁ for spaces, <0xNN> byte fallback) both decode exactly. Encoding is HfEncoder's (hf_encoder.h), with the
// Python library (hf_python.h) as the fallback for files whose features it lacks.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "coat/data/hf_decoder.h"

namespace coat::data {

/// A JSON file of HF's tokenizer family; IoError naming the file when it is missing or not JSON.
nlohmann::json read_tokenizer_json(const std::filesystem::path& path);

class HfTokenizer {
 public:
  /// A tokenizer.json file, or a directory holding one. The start and end ids come from
  /// generation_config.json beside it (bos_token_id, eos_token_id: one id or a list), else from
  /// tokenizer_config.json (bos_token, eos_token), else from the post-processor's template (the special
  /// token before and after the sequence). IoError naming the file when it is missing or not JSON;
  /// InvalidArgument naming the key when the model or an added token is malformed.
  static HfTokenizer load(const std::filesystem::path& path);

  /// The text of `ids`, with special added tokens left out when `skip_special_tokens` (the default of
  /// `tokenizers`' decode). An id with no token is skipped, as `tokenizers` does.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = true) const;

  /// One more than the largest id of the model's vocabulary and the added tokens.
  int32_t vocab_size() const { return vocab_size_; }
  /// The token string of `id` (an added token's content first), nullopt when none has it.
  std::optional<std::string> token(int32_t id) const;
  /// The id of a token string (added tokens first), nullopt when there is none.
  std::optional<int32_t> token_to_id(std::string_view token) const;
  /// Whether `id`'s token is the content of a special added token (what skip_special_tokens drops).
  bool is_special(int32_t id) const;
  /// -1 when unknown.
  int32_t bos_id() const { return bos_id_; }
  /// Every id that ends a generation (Llama-3-Instruct lists several); empty when unknown.
  const std::vector<int32_t>& eos_ids() const { return eos_ids_; }
  /// The tokenizer.json file read.
  const std::filesystem::path& path() const { return path_; }

 private:
  void find_special_ids();

  std::filesystem::path path_;
  std::vector<std::optional<std::string>> model_tokens_;   ///< by id
  std::unordered_map<int32_t, std::string> added_tokens_;  ///< id -> content
  std::unordered_set<std::string> special_contents_;
  std::unordered_map<std::string, int32_t> ids_by_token_;  ///< added tokens override model tokens
  HfDecoder decoder_;
  nlohmann::json post_processor_;
  int32_t vocab_size_ = 0;
  int32_t bos_id_ = -1;
  std::vector<int32_t> eos_ids_;
};

}  // namespace coat::data
