// SentencePiece wrapper and BPE training (see tokenizer.h).
#include "coat/data/tokenizer.h"

#include <fcntl.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "coat/core/error.h"

namespace coat::data {

namespace {

// Feeds SentencePiece's trainer the lines of several files (file names may hold commas, which
// SentencePiece's own `input=a,b` list cannot), and keeps a readable error for the caller.
class LineIterator : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(const std::vector<std::filesystem::path>& files) : files_(files) { advance(); }
  bool done() const override { return done_; }
  void Next() override { advance(); }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override {
    if (error_.empty()) return {};
    return {sentencepiece::util::StatusCode::kNotFound, error_};
  }
  const std::string& error() const { return error_; }
  uint64_t lines() const { return lines_; }

 private:
  void advance() {
    while (!done_) {
      if (!in_.is_open()) {
        if (index_ == files_.size()) {
          done_ = true;
          return;
        }
        in_.open(files_[index_], std::ios::binary);
        if (!in_) {
          fail(detail::concat("tokenizer training input ", files_[index_], ": cannot open (",
                              std::strerror(errno), ")"));
          return;
        }
      }
      if (std::getline(in_, line_)) {
        if (!line_.empty() && line_.back() == '\r') line_.pop_back();
        if (line_.empty()) continue;
        ++lines_;
        return;
      }
      if (in_.bad()) {
        fail(detail::concat("tokenizer training input ", files_[index_], ": read failed"));
        return;
      }
      in_.close();
      in_.clear();
      ++index_;
    }
  }
  void fail(std::string message) {
    error_ = std::move(message);
    done_ = true;
  }

  const std::vector<std::filesystem::path>& files_;
  size_t index_ = 0;
  std::ifstream in_;
  std::string line_;
  std::string error_;
  uint64_t lines_ = 0;
  bool done_ = false;
};

// Writes `bytes` to `path` through `<path>.tmp`, fsync and rename.
void write_file_atomically(const std::filesystem::path& path, const std::string& bytes) {
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw IoError(detail::concat("tokenizer file ", tmp, ": cannot create (", std::strerror(errno), ")"));
  }
  auto fail = [&](const char* what, int err) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw IoError(detail::concat("tokenizer file ", tmp, ": ", what, " failed (", std::strerror(err), ")"));
  };
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      fail("write", err);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    fail("fsync", err);
  }
  if (::close(fd) != 0) fail("close", errno);
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    throw IoError(
        detail::concat("tokenizer file ", path, ": cannot rename from ", tmp, " (", ec.message(), ")"));
  }
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<sentencepiece::SentencePieceProcessor> processor,
                     std::filesystem::path path)
    : processor_(std::move(processor)), path_(std::move(path)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::filesystem::path& model_file) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(model_file, ec)) {
    throw IoError(
        detail::concat("tokenizer model ", model_file, ": ",
                       std::filesystem::exists(model_file, ec) ? "not a regular file" : "no such file",
                       " (expected a SentencePiece .model file, e.g. from coat-tokenize train)"));
  }
  auto processor = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto status = processor->Load(model_file.string());
  if (!status.ok()) {
    throw IoError(detail::concat("tokenizer model ", model_file, ": not a SentencePiece model (",
                                 status.ToString(), ")"));
  }
  return Tokenizer(std::move(processor), model_file);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  const auto status = processor_->Encode(text, &ids);
  if (!status.ok()) {
    throw Error(detail::concat("tokenizer ", path_, ": encoding failed (", status.ToString(), ")"));
  }
  static_assert(sizeof(int) == sizeof(int32_t));
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  for (const int32_t id : ids) check_id(id, "decode");
  std::string text;
  const auto status = processor_->Decode(std::vector<int>(ids.begin(), ids.end()), &text);
  if (!status.ok()) {
    throw Error(detail::concat("tokenizer ", path_, ": decoding failed (", status.ToString(), ")"));
  }
  return text;
}

int32_t Tokenizer::vocab_size() const {
  return processor_->GetPieceSize();
}
int32_t Tokenizer::bos_id() const {
  return processor_->bos_id();
}
int32_t Tokenizer::eos_id() const {
  return processor_->eos_id();
}
int32_t Tokenizer::unk_id() const {
  return processor_->unk_id();
}
int32_t Tokenizer::pad_id() const {
  return processor_->pad_id();
}

std::string Tokenizer::piece(int32_t id) const {
  check_id(id, "piece");
  return processor_->IdToPiece(id);
}

int32_t Tokenizer::piece_to_id(std::string_view piece) const {
  return processor_->PieceToId(piece);
}

void Tokenizer::check_id(int32_t id, const char* op) const {
  if (id < 0 || id >= vocab_size()) {
    throw InvalidArgument(detail::concat("[Tokenizer::", op, "] token id ", id,
                                         " is outside the vocabulary [0, ", vocab_size(), ") of ", path_));
  }
}

BpeTrainResult train_bpe(const std::vector<std::filesystem::path>& input_files,
                         const std::filesystem::path& model_prefix, int32_t vocab_size,
                         const BpeTrainOptions& options) {
  COAT_ARG_CHECK(!input_files.empty(), "train_bpe", "no input files");
  COAT_ARG_CHECK(!model_prefix.empty() && model_prefix.has_filename(), "train_bpe", "model prefix ",
                 model_prefix, " must name a file stem (e.g. data/tok/tok)");
  // 3 special pieces + 256 byte pieces, plus at least the characters of the corpus.
  COAT_ARG_CHECK(
      vocab_size > 259, "train_bpe", "vocab_size ", vocab_size,
      " must exceed the 259 pieces that are always present (<unk>, <s>, </s> and 256 byte pieces)");
  COAT_ARG_CHECK(options.character_coverage >= 0.98 && options.character_coverage <= 1.0, "train_bpe",
                 "character_coverage ", options.character_coverage, " is outside [0.98, 1]");
  COAT_ARG_CHECK(options.max_sentence_length >= 10 && options.max_sentence_length <= (int64_t{1} << 30),
                 "train_bpe", "max_sentence_length ", options.max_sentence_length, " is outside [10, 2^30]");
  COAT_ARG_CHECK(options.input_sentence_size == 0 || options.input_sentence_size > 100, "train_bpe",
                 "input_sentence_size ", options.input_sentence_size, " must be 0 (all lines) or > 100");
  COAT_ARG_CHECK(options.num_threads >= 1 && options.num_threads <= 128, "train_bpe", "num_threads ",
                 options.num_threads, " is outside [1, 128]");
  COAT_ARG_CHECK(options.max_sentencepiece_length >= 1 && options.max_sentencepiece_length <= 512,
                 "train_bpe", "max_sentencepiece_length ", options.max_sentencepiece_length,
                 " is outside [1, 512]");
  for (const auto& file : input_files) {
    std::ifstream probe(file, std::ios::binary);
    if (!probe) {
      throw IoError(
          detail::concat("tokenizer training input ", file, ": cannot open (", std::strerror(errno), ")"));
    }
  }
  const auto dir = model_prefix.parent_path();
  if (!dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) {
      throw IoError(
          detail::concat("tokenizer output directory ", dir, ": cannot create (", ec.message(), ")"));
    }
  }

  // The model records its trainer spec; with the lines fed through an iterator and the files written here,
  // no path enters it, so the bytes depend only on the text and the options.
  const std::unordered_map<std::string, std::string> spec = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocab_size)},
      {"character_coverage", detail::concat(options.character_coverage)},
      {"byte_fallback", "true"},
      {"split_digits", "true"},
      {"split_by_unicode_script", "true"},
      {"split_by_whitespace", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"normalization_rule_name", "identity"},
      {"add_dummy_prefix", "true"},
      {"remove_extra_whitespaces", "false"},
      {"max_sentencepiece_length", std::to_string(options.max_sentencepiece_length)},
      {"max_sentence_length", std::to_string(options.max_sentence_length)},
      {"input_sentence_size", std::to_string(options.input_sentence_size)},
      {"shuffle_input_sentence", "true"},
      {"num_threads", std::to_string(options.num_threads)},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"minloglevel", options.verbose ? "0" : "1"},
  };
  LineIterator lines(input_files);
  std::string serialized;
  const auto status = sentencepiece::SentencePieceTrainer::Train(spec, &lines, &serialized);
  if (!lines.error().empty()) throw IoError(lines.error());
  if (!status.ok()) {
    throw Error(detail::concat("[train_bpe] SentencePiece training on ", lines.lines(), " lines of ",
                               input_files.front(), input_files.size() > 1 ? " and others" : "",
                               " failed: ", status.ToString()));
  }

  // The .vocab file as spm_train writes it: "piece<TAB>score" per id.
  sentencepiece::SentencePieceProcessor processor;
  const auto loaded = processor.LoadFromSerializedProto(serialized);
  if (!loaded.ok()) {
    throw Error(detail::concat("[train_bpe] the trained model does not load: ", loaded.ToString()));
  }
  std::ostringstream vocab;
  for (int id = 0; id < processor.GetPieceSize(); ++id) {
    vocab << processor.IdToPiece(id) << '\t' << processor.GetScore(id) << '\n';
  }

  BpeTrainResult result;
  result.model_file = model_prefix;
  result.model_file += ".model";
  result.vocab_file = model_prefix;
  result.vocab_file += ".vocab";
  result.vocab_size = processor.GetPieceSize();
  write_file_atomically(result.vocab_file, vocab.str());
  write_file_atomically(result.model_file, serialized);
  return result;
}

}  // namespace coat::data
