// The text side of the tokenizer.json encoder, before the model: the normalizers (Prepend, Replace of a
// string, Sequence: Llama-2's "▁" spaces) and the pre-tokenizers (Split by the Llama-3 / cl100k pattern,
// ByteLevel with or without GPT-2's pattern, Metaspace, Sequence), as the `tokenizers` library runs them.
// The two regular expressions are hand-written scanners over code points (no regex library). Anything else
// is NotImplemented naming its tokenizer.json key, so that the caller can fall back to the library.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace coat::data {

/// One split of the text on its way to the model: an added token (added_id >= 0, taken whole) or text
/// that the pre-tokenizers split further and the model encodes.
struct HfPiece {
  std::string text;
  int32_t added_id = -1;
  bool at_text_start = false;  ///< begins at byte 0 of the input (Metaspace's prepend_scheme "first")
};

/// The pre-tokenizer patterns this encoder knows, as the `tokenizers` library's regex finds their matches.
enum class HfSplitPattern {
  kGpt2,    ///< 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kLlama3,  ///< (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
            ///< ?[^\s\p{L}\p{N}]+[\r\n]*|...
};

/// The pattern string as tokenizer.json spells it.
std::string_view hf_split_pattern_regex(HfSplitPattern pattern);
/// `text` cut at the pattern's matches, matches and the text between them each a piece ("Isolated"): the
/// code-point ranges [begin, end) in order, covering the text.
std::vector<std::pair<size_t, size_t>> hf_split_isolated(std::span<const char32_t> text,
                                                         HfSplitPattern pattern);

/// A tokenizer.json "normalizer" (null: none).
class HfNormalizer {
 public:
  /// NotImplemented naming the key (e.g. normalizer.type 'NFC') for one this encoder lacks; `source` names
  /// the file in errors.
  static HfNormalizer from_json(const nlohmann::json& normalizer, std::string_view source);
  std::string normalize(std::string text) const;

 private:
  struct Step {
    std::string prepend;                   ///< Prepend: put before non-empty text
    std::string replace_from, replace_to;  ///< Replace: every occurrence, left to right
  };
  std::vector<Step> steps_;
};

/// A tokenizer.json "pre_tokenizer" (null: the pieces go to the model as they are).
class HfPreTokenizer {
 public:
  static HfPreTokenizer from_json(const nlohmann::json& pre_tokenizer, std::string_view source);
  /// Splits every text piece (added tokens are left as they are); empty pieces are dropped.
  std::vector<HfPiece> pre_tokenize(std::vector<HfPiece> pieces) const;

 private:
  struct Step {
    enum class Kind { kSplit, kByteLevel, kMetaspace } kind = Kind::kSplit;
    HfSplitPattern pattern = HfSplitPattern::kLlama3;  ///< kSplit; kByteLevel with use_regex: kGpt2
    bool use_regex = false;                            ///< kByteLevel
    bool add_prefix_space = false;                     ///< kByteLevel
    std::string replacement;                           ///< kMetaspace
    enum class Prepend { kNever, kFirst, kAlways } prepend = Prepend::kAlways;  ///< kMetaspace
    bool split = true;                                                          ///< kMetaspace
  };
  static void add_steps(const nlohmann::json& j, const std::string& key, std::string_view source,
                        std::vector<Step>* steps);
  static std::vector<HfPiece> run(const Step& step, HfPiece piece);
  std::vector<Step> steps_;
};

/// "[hf_encoder] SOURCE: KEY ... is not supported by the native encoder" as NotImplemented.
[[noreturn]] void hf_encoder_unsupported(std::string_view source, const std::string& key,
                                         const std::string& what);
/// "[hf_encoder] SOURCE: KEY ..." as InvalidArgument, for a malformed file.
[[noreturn]] void hf_encoder_malformed(std::string_view source, const std::string& key,
                                       const std::string& what);

}  // namespace coat::data
