// SentencePiece tokenizers: a thin wrapper over sentencepiece::SentencePieceProcessor (any `.model`, e.g.
// Llama-2's tokenizer.model) and BPE training with Llama-2's settings (byte fallback, split digits,
// identity normalisation, <unk>=0 <s>=1 </s>=2, no pad). SentencePiece stays a private dependency: this
// header only forward-declares it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}  // namespace sentencepiece

namespace coat::data {

class Tokenizer {
 public:
  /// Loads a SentencePiece model; throws IoError naming the file when it is missing or not a model.
  static Tokenizer load(const std::filesystem::path& model_file);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  /// Token ids of `text` (no <s>/</s>; add bos_id()/eos_id() yourself).
  std::vector<int32_t> encode(std::string_view text) const;
  /// Text of `ids`; control tokens (<s>, </s>) decode to nothing, byte tokens to their bytes. Throws
  /// InvalidArgument for an id outside [0, vocab_size()).
  std::string decode(std::span<const int32_t> ids) const;

  int32_t vocab_size() const;
  /// -1 when the model has no such token.
  int32_t bos_id() const;
  int32_t eos_id() const;
  int32_t unk_id() const;
  int32_t pad_id() const;
  /// The piece of `id` ("▁the", "<0x0A>", "<s>"); InvalidArgument outside the vocabulary.
  std::string piece(int32_t id) const;
  /// The id of `piece`, or unk_id() when the model has no such piece.
  int32_t piece_to_id(std::string_view piece) const;
  const std::filesystem::path& path() const { return path_; }

 private:
  Tokenizer(std::unique_ptr<sentencepiece::SentencePieceProcessor> processor, std::filesystem::path path);
  void check_id(int32_t id, const char* op) const;

  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
  std::filesystem::path path_;
};

/// Options of train_bpe; the defaults follow Llama-2's tokenizer where they apply to a small corpus.
struct BpeTrainOptions {
  /// Fraction of the characters (by frequency) that get their own piece; the rest are spelled with byte
  /// pieces (byte fallback). SentencePiece accepts [0.98, 1]; 1.0 suits a small corpus in one script,
  /// 0.9995 a large multilingual one.
  double character_coverage = 1.0;
  /// Lines longer than this (bytes) are skipped in training (SentencePiece's default 4192).
  int64_t max_sentence_length = 4192;
  /// 0: train on every line; N > 0: on N lines sampled with SentencePiece's fixed seed.
  int64_t input_sentence_size = 0;
  /// Threads of SentencePiece's normalisation pass. BPE merging is single-threaded and the result does
  /// not depend on the thread count (the model file records it, so files differ only in that field).
  int num_threads = 1;
  /// Longest piece, in characters (Llama-2: 16).
  int max_sentencepiece_length = 16;
  /// SentencePiece's progress log on stderr (off: warnings and errors only).
  bool verbose = false;
};

/// What train_bpe wrote.
struct BpeTrainResult {
  std::filesystem::path model_file;  ///< <prefix>.model
  std::filesystem::path vocab_file;  ///< <prefix>.vocab ("piece<TAB>score" per line, as spm_train writes)
  int32_t vocab_size = 0;
};

/// Trains a SentencePiece BPE model on the lines of `input_files` (UTF-8 text; blank lines are skipped)
/// and writes <model_prefix>.model and <model_prefix>.vocab, each atomically. Settings: model_type=bpe,
/// byte_fallback, split_digits, normalization_rule_name=identity, add_dummy_prefix,
/// remove_extra_whitespaces=false, allow_whitespace_only_pieces, unk=0 bos=1 eos=2 pad=-1 (Llama-2's).
/// Deterministic: the same inputs and options give the same bytes, whatever the output directory.
/// Throws IoError naming a missing or unreadable input, InvalidArgument for bad options (vocab_size
/// must exceed the 3 special + 256 byte pieces + the characters kept), Error with SentencePiece's message
/// when training fails.
/// SentencePiece keeps its log level in a process-wide setting; this call sets it from `verbose`.
BpeTrainResult train_bpe(const std::vector<std::filesystem::path>& input_files,
                         const std::filesystem::path& model_prefix, int32_t vocab_size,
                         const BpeTrainOptions& options = {});

}  // namespace coat::data
