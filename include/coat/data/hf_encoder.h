// HF tokenizer.json files on the encoding side (text -> ids), natively, as the `tokenizers` library
// encodes: added tokens split out of the text first (content matched exactly, leftmost-longest; lstrip and
// rstrip honoured), the normalizer, the pre-tokenizer (hf_pretokenizer.h), the BPE model (hf_bpe.h), then
// the post-processor's "single" template when special tokens are asked for. It covers what Llama-3/OLMo-2
// (byte-level BPE, Llama-3 Split) and Llama-2 (SentencePiece-converted BPE, byte fallback) files use; a
// file with anything else is refused at load with NotImplemented naming the tokenizer.json key, so that the
// caller can fall back to the Python library (hf_python.h) instead of producing other ids.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "coat/data/hf_bpe.h"
#include "coat/data/hf_pretokenizer.h"

namespace coat::data {

class HfEncoder {
 public:
  /// A tokenizer.json file, or a directory holding one. IoError when unreadable; NotImplemented naming the
  /// key of a feature this encoder lacks (normalizer.type 'NFC', model.type 'Unigram', ...);
  /// InvalidArgument naming the key when malformed.
  static HfEncoder load(const std::filesystem::path& path);

  /// The ids of `text`; with `add_special_tokens`, the post-processor's template around them (Llama's BOS).
  /// `text` must be UTF-8: the library takes a Rust &str, so Python cannot even pass ill-formed text; here
  /// it is an InvalidArgument naming the byte offset.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;

  const std::filesystem::path& path() const { return path_; }

 private:
  struct AddedToken {
    std::string pattern;  ///< the content; normalized by the normalizer when the token is "normalized"
    int32_t id;
    bool lstrip, rstrip;
  };
  /// `piece` cut at the added tokens among `tokens` (leftmost, then longest), as AddedVocabulary's
  /// find_matches.
  static std::vector<HfPiece> split_added(HfPiece piece, const std::vector<AddedToken>& tokens);
  void read_added_tokens(const nlohmann::json& added_tokens);
  void read_post_processor(const nlohmann::json& processor, const std::string& key);

  std::filesystem::path path_;
  HfNormalizer normalizer_;
  HfPreTokenizer pre_tokenizer_;
  HfBpe model_;
  std::vector<AddedToken> raw_added_, normalized_added_;  ///< longest first
  std::vector<int32_t> prefix_ids_, suffix_ids_;          ///< the templates' special tokens around the text
};

}  // namespace coat::data
