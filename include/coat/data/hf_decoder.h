// The decoders of HF tokenizer.json files ("decoder": tokens -> text), as the `tokenizers` library runs
// them: ByteLevel (GPT-2's byte <-> character table reversed; Llama-3), Replace, ByteFallback, Fuse, Strip
// (Llama-2's chain: "▁" -> " ", <0xNN> byte tokens, one string, the leading space cut), Metaspace (older
// Llama-2 files) and Sequence. Invalid UTF-8 becomes U+FFFD as Rust's String::from_utf8_lossy makes it.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace coat::data {

/// `bytes` as UTF-8 with every maximal invalid subsequence replaced by U+FFFD (the Unicode standard's
/// "substitution of maximal subparts", which Rust's from_utf8_lossy and Python's errors="replace" follow).
std::string utf8_lossy(std::string_view bytes);

/// The byte that GPT-2's byte-level alphabet spells as code point `c`, or -1 when none does.
int byte_level_byte(char32_t c);
/// The code point that spells `byte` in GPT-2's byte-level alphabet ('Ġ' for a space).
char32_t byte_level_char(unsigned char byte);

/// One step of a decoder chain: a list of token strings to another (decode_chain in `tokenizers`).
class HfDecoderStep {
 public:
  virtual ~HfDecoderStep() = default;
  virtual std::vector<std::string> decode_chain(std::vector<std::string> tokens) const = 0;
};

/// A tokenizer.json "decoder" object; null gives no decoder (decode() joins the tokens with spaces, as
/// `tokenizers` does without one).
class HfDecoder {
 public:
  /// NotImplemented naming the type for a decoder this reader lacks (WordPiece, BPEDecoder, CTC, a Regex
  /// Replace); InvalidArgument naming the key for a malformed one. `source` names the file in errors.
  static HfDecoder from_json(const nlohmann::json& decoder, std::string_view source);
  /// The text of the tokens: the chain's strings concatenated.
  std::string decode(std::vector<std::string> tokens) const;

 private:
  std::shared_ptr<const HfDecoderStep> step_;  ///< null: no decoder
};

}  // namespace coat::data
