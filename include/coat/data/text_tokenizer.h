// The tokenizer of a generation, whichever kind the model uses: a SentencePiece `.model` (Tokenizer) or an
// HF `tokenizer.json` (HfTokenizer decodes, HfEncoder encodes prompts; the Python `tokenizers` library,
// hf_python.h, encodes those of a file with features HfEncoder refuses).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "coat/data/hf_encoder.h"
#include "coat/data/hf_tokenizer.h"
#include "coat/data/tokenizer.h"

namespace coat::data {

class TextTokenizer {
 public:
  struct Options {
    bool show_special_tokens = false;        ///< decode <s>, <|eot_id|>, ... as text instead of dropping them
    std::filesystem::path hf_encode_script;  ///< scripts/hf_encode.py, for prompts HfEncoder cannot encode
  };

  /// A `.json` file or a directory holding tokenizer.json: HF; anything else: a SentencePiece model.
  static TextTokenizer load(const std::filesystem::path& path, Options options);

  /// The prompt's ids as the model saw its training text begin: SentencePiece: BOS (when the model has one)
  /// and the pieces; HF: the post-processor's template (BOS for Llama-2 and Llama-3).
  std::vector<int32_t> encode_prompt(std::string_view text) const;
  std::string decode(std::span<const int32_t> ids) const;
  /// Whether generating `id` ends a sample (EOS; with HF, every id generation_config.json lists).
  bool ends_generation(int32_t id) const;
  /// "SentencePiece model PATH" / "tokenizer.json PATH", with why Python encodes its prompts when it does.
  std::string description() const;
  /// Why the native encoder refused the tokenizer.json (the key), "" when it encodes or for SentencePiece.
  const std::string& python_encoder_reason() const { return python_encoder_reason_; }

 private:
  Options options_;
  std::shared_ptr<const Tokenizer> sentencepiece_;
  std::shared_ptr<const HfTokenizer> hf_;
  std::shared_ptr<const HfEncoder> hf_encoder_;  ///< null: Python encodes (python_encoder_reason_ says why)
  std::string python_encoder_reason_;
};

}  // namespace coat::data
