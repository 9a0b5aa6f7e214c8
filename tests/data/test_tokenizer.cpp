// SentencePiece tokenizers: BPE training with Llama-2's settings on a generated corpus, exact round trips
// (also of characters never seen in training, through byte fallback), deterministic training, and errors
// that name the file.
#include <gtest/gtest.h>

#include "expect_error.h"
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "coat/core/error.h"
#include "coat/data/tokenizer.h"

namespace coat::data {
namespace {

constexpr int32_t kVocab = 384;

std::string read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A few thousand English-like lines over a small word list, with numbers and punctuation; blank lines
// between paragraphs. ASCII only, so anything else must come out of byte fallback.
void write_corpus(const std::filesystem::path& path) {
  const std::vector<std::string> words = {
      "the",   "and",    "of",      "in",      "beginning", "God",      "created", "heaven",
      "earth", "was",    "without", "form",    "void",      "darkness", "upon",    "face",
      "deep",  "spirit", "moved",   "waters",  "said",      "let",      "there",   "be",
      "light", "saw",    "that",    "it",      "good",      "divided",  "from",    "called",
      "day",   "night",  "evening", "morning", "were",      "first",    "second",  "third"};
  std::mt19937 gen(11);
  std::ofstream out(path);
  for (int line = 0; line < 3000; ++line) {
    const int n = 4 + static_cast<int>(gen() % 12);
    std::string s = "In verse " + std::to_string(gen() % 1000) + ",";
    for (int i = 0; i < n; ++i) s += " " + words[gen() % words.size()];
    s += (gen() % 3 == 0) ? "; And so it was." : ".";
    out << s << "\n";
    if (line % 10 == 9) out << "\n";
  }
}

class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::filesystem::path(std::filesystem::temp_directory_path() /
                                     ("coat_tokenizer_test_" + std::to_string(::getpid())));
    std::filesystem::create_directories(*dir_);
    write_corpus(*dir_ / "corpus.txt");
    result_ = new BpeTrainResult(train_bpe({*dir_ / "corpus.txt"}, *dir_ / "a" / "tok", kVocab));
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete result_;
    delete dir_;
  }
  static std::filesystem::path* dir_;
  static BpeTrainResult* result_;
};
std::filesystem::path* TokenizerTest::dir_ = nullptr;
BpeTrainResult* TokenizerTest::result_ = nullptr;


TEST_F(TokenizerTest, TrainsWithLlamaSpecialIds) {
  EXPECT_EQ(result_->model_file, *dir_ / "a" / "tok.model");
  EXPECT_EQ(result_->vocab_size, kVocab);
  EXPECT_TRUE(std::filesystem::exists(result_->model_file));
  EXPECT_FALSE(std::filesystem::exists(*dir_ / "a" / "tok.model.tmp"));
  const Tokenizer tok = Tokenizer::load(result_->model_file);
  EXPECT_EQ(tok.vocab_size(), kVocab);
  EXPECT_EQ(tok.unk_id(), 0);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.pad_id(), -1);
  EXPECT_EQ(tok.piece(0), "<unk>");
  EXPECT_EQ(tok.piece(1), "<s>");
  EXPECT_EQ(tok.piece(2), "</s>");
  // Byte fallback: the 256 byte pieces follow the special ones, as in Llama-2 (<0x0A> is id 13 there too).
  EXPECT_EQ(tok.piece(3), "<0x00>");
  EXPECT_EQ(tok.piece(13), "<0x0A>");
  EXPECT_EQ(tok.piece(258), "<0xFF>");
  EXPECT_EQ(tok.piece_to_id("<0x0A>"), 13);
  // The .vocab file lists every piece with its score.
  std::ifstream vocab(result_->vocab_file);
  std::string line;
  int lines = 0;
  while (std::getline(vocab, line)) {
    if (lines == 1) {
      EXPECT_EQ(line, "<s>\t0");
    }
    ++lines;
  }
  EXPECT_EQ(lines, kVocab);
}

TEST_F(TokenizerTest, RoundTripsAsciiAndUnseenCharacters) {
  const Tokenizer tok = Tokenizer::load(result_->model_file);
  const std::vector<std::string> texts = {
      "In the beginning God created the heaven and the earth.",
      "And the evening and the morning were the third day; verse 42, 1999 and 7.",
      "  two leading spaces, a\ttab and trailing space ",
      "line one\nline two",
      // Never in the corpus: accents, CJK, an emoji, a control character.
      "naïve café — 日本語 ✓ 🙂 \x01 Zürich",
  };
  for (const auto& text : texts) {
    const std::vector<int32_t> ids = tok.encode(text);
    ASSERT_FALSE(ids.empty());
    for (const int32_t id : ids) {
      EXPECT_GE(id, 0);
      EXPECT_LT(id, kVocab);
      EXPECT_NE(id, tok.unk_id()) << "byte fallback should leave no <unk> in: " << text;
    }
    EXPECT_EQ(tok.decode(ids), text);
  }
  // Unseen characters are spelled in UTF-8 bytes.
  const std::vector<int32_t> ids = tok.encode("日");
  std::string pieces;
  for (const int32_t id : ids) pieces += tok.piece(id);
  EXPECT_NE(pieces.find("<0xE6><0x97><0xA5>"), std::string::npos) << pieces;
  // split_digits: no piece holds two digits.
  for (const int32_t id : tok.encode("12345 and 6789")) {
    const std::string p = tok.piece(id);
    int digits = 0;
    for (const char c : p) digits += (c >= '0' && c <= '9') ? 1 : 0;
    EXPECT_LE(digits, 1) << p;
  }
  // The BPE merges happened: "In" starts every line of the corpus and is one piece, and a corpus-like
  // sentence takes well under one token per two bytes.
  EXPECT_EQ(tok.encode("In").size(), 1u);
  EXPECT_LT(2 * tok.encode(texts[0]).size(), texts[0].size());
  EXPECT_TRUE(tok.decode(std::vector<int32_t>{}).empty());
  // Control tokens decode to nothing.
  std::vector<int32_t> with_specials = tok.encode("light");
  with_specials.insert(with_specials.begin(), tok.bos_id());
  with_specials.push_back(tok.eos_id());
  EXPECT_EQ(tok.decode(with_specials), "light");
}

TEST_F(TokenizerTest, TrainingIsDeterministic) {
  // Same input, another directory: byte-identical files (no path is recorded in the model).
  const auto again = train_bpe({*dir_ / "corpus.txt"}, *dir_ / "b" / "tok", kVocab);
  EXPECT_EQ(read_bytes(again.model_file), read_bytes(result_->model_file));
  EXPECT_EQ(read_bytes(again.vocab_file), read_bytes(result_->vocab_file));
  // More threads: the same pieces and scores (the model file differs only in the recorded thread count).
  BpeTrainOptions threaded;
  threaded.num_threads = 4;
  const auto parallel = train_bpe({*dir_ / "corpus.txt"}, *dir_ / "c" / "tok", kVocab, threaded);
  EXPECT_EQ(read_bytes(parallel.vocab_file), read_bytes(result_->vocab_file));
}

TEST_F(TokenizerTest, ClearErrors) {
  test::expect_error_containing([&] { Tokenizer::load(*dir_ / "missing.model"); }, "missing.model\": no such file");
  test::expect_error_containing([&] { Tokenizer::load(*dir_ / "corpus.txt"); }, "corpus.txt\": not a SentencePiece model");
  test::expect_error_containing(
      [&] {
        train_bpe({*dir_ / "corpus.txt", *dir_ / "absent.txt"}, *dir_ / "d" / "tok", kVocab);
      },
      "absent.txt\": cannot open");
  test::expect_error_containing([&] { train_bpe({*dir_ / "corpus.txt"}, *dir_ / "d" / "tok", 200); },
               "must exceed the 259 pieces");
  test::expect_error_containing([&] { train_bpe({}, *dir_ / "d" / "tok", kVocab); }, "no input files");
  // Room for the special and byte pieces but not for the corpus's characters: SentencePiece's reason.
  test::expect_error_containing([&] { train_bpe({*dir_ / "corpus.txt"}, *dir_ / "d" / "tok", 270); }, "Vocabulary size");
  EXPECT_FALSE(std::filesystem::exists(*dir_ / "d" / "tok.model"));
  const Tokenizer tok = Tokenizer::load(result_->model_file);
  test::expect_error_containing(
      [&] {
        tok.decode(std::vector<int32_t>{5, kVocab});
      },
      "token id 384 is outside the vocabulary");
  test::expect_error_containing([&] { tok.piece(-1); }, "token id -1");
}

}  // namespace
}  // namespace coat::data
