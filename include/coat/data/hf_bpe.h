// The BPE model of a tokenizer.json for encoding: a pre-token's characters become vocabulary ids (unknown
// ones as <0xNN> byte tokens with byte_fallback, else the unk token, fused when fuse_unk), then the merges
// apply lowest rank first, leftmost first among equals, as the `tokenizers` library's Word::merge_all.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace coat::data {

class HfBpe {
 public:
  /// tokenizer.json's "model" object; NotImplemented naming the key for another model type or for
  /// dropout, continuing_subword_prefix, end_of_word_suffix; InvalidArgument for a malformed vocabulary or
  /// a merge of tokens not in it.
  static HfBpe from_json(const nlohmann::json& model, std::string_view source);

  /// The ids of one pre-token (empty for empty text).
  std::vector<int32_t> tokenize(std::string_view text) const;
  /// The model's id of `token`, nullopt when not in the vocabulary.
  std::optional<int32_t> token_to_id(std::string_view token) const;
  /// Whether some vocabulary token has `id`.
  bool has_id(int32_t id) const { return ids_.contains(id); }

 private:
  struct Merge {
    uint32_t rank;
    int32_t new_id;
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  std::vector<int32_t> merge_all(std::vector<int32_t> symbols) const;

  std::string source_;
  std::unordered_map<std::string, int32_t> vocab_;
  std::unordered_set<int32_t> ids_;
  std::unordered_map<uint64_t, Merge> merges_;  ///< (left id, right id) -> rank and merged id
  std::optional<std::string> unk_token_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
};

}  // namespace coat::data
