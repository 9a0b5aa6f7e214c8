// tokenizer.json decoding: the UTF-8 repair and byte-level alphabet, then three tokenizer.json files written
// here (Llama-3-like byte-level BPE; Llama-2-like SentencePiece BPE with byte fallback and the
// Replace/ByteFallback/Fuse/Strip chain; the older Metaspace decoder): expected texts (characters split
// across tokens included), special tokens skipped or shown, the start and end ids, and, where python3 has
// `tokenizers`, our decode against the library's on random ids and the encoder script's round trip.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "expect_error.h"

#include "coat/core/error.h"
#include "coat/data/hf_python.h"
#include "coat/data/hf_tokenizer.h"
#include "coat/data/text_tokenizer.h"

namespace coat::data {
namespace {

namespace fs = std::filesystem;
using coat::test::expect_error_containing;

const std::string kFffd = "\xEF\xBF\xBD";

std::string utf8(char32_t c) {
  std::u32string s(1, c);
  std::string out;
  for (char32_t ch : s) {
    if (ch < 0x80) {
      out += static_cast<char>(ch);
    } else if (ch < 0x800) {
      out += static_cast<char>(0xC0 | (ch >> 6));
      out += static_cast<char>(0x80 | (ch & 0x3F));
    } else {
      out += static_cast<char>(0xE0 | (ch >> 12));
      out += static_cast<char>(0x80 | ((ch >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (ch & 0x3F));
    }
  }
  return out;
}

/// A byte string spelled in GPT-2's byte-level alphabet.
std::string byte_level(std::string_view bytes) {
  std::string out;
  for (char b : bytes) out += utf8(byte_level_char(static_cast<unsigned char>(b)));
  return out;
}

TEST(Utf8Lossy, ReplacesMaximalInvalidSubparts) {
  EXPECT_EQ(utf8_lossy("plain \xE4\xB8\x96 text"), "plain \xE4\xB8\x96 text");
  EXPECT_EQ(utf8_lossy("\xE4\xB8"
                       "a"),
            kFffd + "a");                                        // a truncated sequence: one
  EXPECT_EQ(utf8_lossy("\xED\xA0\x80"), kFffd + kFffd + kFffd);  // a surrogate: one per byte
  EXPECT_EQ(utf8_lossy("\xC0\xAF"), kFffd + kFffd);              // overlong
  EXPECT_EQ(utf8_lossy("\xF0\x9F\x98!"), kFffd + "!");
  EXPECT_EQ(utf8_lossy("\xF4\x90\x80\x80"), kFffd + kFffd + kFffd + kFffd);  // past U+10FFFF
  EXPECT_EQ(utf8_lossy("\x80\xFF"), kFffd + kFffd);
}

TEST(ByteLevelAlphabet, IsGpt2sTable) {
  EXPECT_EQ(byte_level_char(' '), U'\u0120');   // Ġ
  EXPECT_EQ(byte_level_char('\n'), U'\u010A');  // Ċ
  EXPECT_EQ(byte_level_char('!'), U'!');
  EXPECT_EQ(byte_level_char(0xAD), U'\u0143');  // the soft hyphen is not printable: 256 + 67
  for (int b = 0; b < 256; ++b) EXPECT_EQ(byte_level_byte(byte_level_char(static_cast<unsigned char>(b))), b);
  EXPECT_EQ(byte_level_byte(U'\u0144'), -1);
  EXPECT_EQ(byte_level_byte(U'\u00A0'), -1);  // a byte that does not spell itself
}

class HfTokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("coat_hf_tok_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  static nlohmann::json added(int id, const std::string& content, bool special) {
    return {{"id", id},        {"content", content},     {"single_word", false}, {"lstrip", false},
            {"rstrip", false}, {"normalized", !special}, {"special", special}};
  }
  static nlohmann::json bos_template(const std::string& bos, int id) {
    return {
        {"type", "TemplateProcessing"},
        {"single",
         {{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair",
         {{{"Sequence", {{"id", "A"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
        {"special_tokens", {{bos, {{"id", bos}, {"ids", {id}}, {"tokens", {bos}}}}}}};
  }
  fs::path write(const std::string& name, const nlohmann::json& j) {
    fs::create_directories(dir_ / name);
    std::ofstream(dir_ / name / "tokenizer.json") << j.dump(1);
    return dir_ / name / "tokenizer.json";
  }

  /// Llama-3-like: 256 byte tokens (id = byte), merges toward " the" and the first two bytes of 世, added
  /// tokens after them.
  fs::path byte_level_bpe() {
    nlohmann::json vocab = nlohmann::json::object();
    for (int b = 0; b < 256; ++b) vocab[byte_level(std::string(1, static_cast<char>(b)))] = b;
    const std::vector<std::pair<std::string, std::string>> merges = {
        {" ", "t"}, {"h", "e"}, {" t", "he"}, {"\xC3", "\xA9"}, {"\xE4", "\xB8"}};
    nlohmann::json merge_list = nlohmann::json::array();
    int next = 256;
    for (const auto& [a, b] : merges) {
      vocab[byte_level(a + b)] = next++;
      merge_list.push_back(byte_level(a) + " " + byte_level(b));
    }
    nlohmann::json j;
    j["version"] = "1.0";
    j["added_tokens"] = {added(261, "<|begin_of_text|>", true), added(262, "<|eot_id|>", true),
                         added(263, "<extra>", false)};
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = {
        {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
    j["post_processor"] = bos_template("<|begin_of_text|>", 261);
    j["decoder"] = {
        {"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
    j["model"] = {{"type", "BPE"},
                  {"dropout", nullptr},
                  {"unk_token", nullptr},
                  {"continuing_subword_prefix", nullptr},
                  {"end_of_word_suffix", nullptr},
                  {"fuse_unk", false},
                  {"byte_fallback", false},
                  {"ignore_merges", true},
                  {"vocab", vocab},
                  {"merges", merge_list}};
    return write("bytelevel", j);
  }

  /// Llama-2-like: <unk> <s> </s>, the 256 <0xNN> byte tokens (ids 3-258), then pieces; ▁ for spaces.
  fs::path sentencepiece_bpe(const nlohmann::json& decoder, const std::string& name) {
    nlohmann::json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
    for (int b = 0; b < 256; ++b) {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "<0x%02X>", b);
      vocab[hex] = 3 + b;
    }
    int next = 259;
    for (const char* piece : {"\u2581", "t", "h", "e", "l", "o", "w", "\u00e9"}) vocab[piece] = next++;
    const std::vector<std::pair<std::string, std::string>> merges = {
        {"\u2581", "t"}, {"h", "e"},    {"\u2581t", "he"},  {"l", "l"},
        {"he", "ll"},    {"hell", "o"}, {"\u2581", "hello"}};
    nlohmann::json merge_list = nlohmann::json::array();
    for (const auto& [a, b] : merges) {
      vocab[a + b] = next++;
      merge_list.push_back(a + " " + b);
    }
    nlohmann::json j;
    j["version"] = "1.0";
    j["added_tokens"] = {added(0, "<unk>", true), added(1, "<s>", true), added(2, "</s>", true)};
    j["normalizer"] = {{"type", "Sequence"},
                       {"normalizers",
                        {{{"type", "Prepend"}, {"prepend", "\u2581"}},
                         {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}}}};
    j["pre_tokenizer"] = nullptr;
    j["post_processor"] = bos_template("<s>", 1);
    j["decoder"] = decoder;
    j["model"] = {{"type", "BPE"},
                  {"dropout", nullptr},
                  {"unk_token", "<unk>"},
                  {"continuing_subword_prefix", nullptr},
                  {"end_of_word_suffix", nullptr},
                  {"fuse_unk", true},
                  {"byte_fallback", true},
                  {"ignore_merges", false},
                  {"vocab", vocab},
                  {"merges", merge_list}};
    return write(name, j);
  }
  static nlohmann::json llama2_decoder() {
    return {{"type", "Sequence"},
            {"decoders",
             {{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
              {{"type", "ByteFallback"}},
              {{"type", "Fuse"}},
              {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  }
  static nlohmann::json metaspace_decoder() {
    return {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"add_prefix_space", true}};
  }

  static fs::path script() { return fs::path(COAT_SOURCE_DIR) / "scripts" / "hf_encode.py"; }

  fs::path dir_;
};

TEST_F(HfTokenizerTest, ByteLevelBpeDecodes) {
  const HfTokenizer t = HfTokenizer::load(byte_level_bpe().parent_path());  // the directory works too
  EXPECT_EQ(t.vocab_size(), 264);
  const auto id = [&](std::string_view bytes) { return t.token_to_id(byte_level(bytes)).value(); };
  const int32_t the = id(" the"), e4b8 = id("\xE4\xB8"), x96 = id("\x96"), eacute = id("\xC3\xA9");
  EXPECT_EQ(the, 258);
  const std::vector<int32_t> ids = {261, the, id(" "), e4b8, x96, id(" "), eacute, 262};
  EXPECT_EQ(t.decode(ids), " the \xE4\xB8\x96 \xC3\xA9");  // " the 世 é"
  EXPECT_EQ(t.decode(ids, /*skip_special_tokens=*/false),
            "<|begin_of_text|> the \xE4\xB8\x96 \xC3\xA9<|eot_id|>");
  EXPECT_EQ(t.decode(std::vector<int32_t>{263, the}), "<extra> the") << "a non-special added token stays";
  // 世 split across tokens: whole only when both parts are there.
  EXPECT_EQ(t.decode(std::vector<int32_t>{e4b8}), kFffd);
  EXPECT_EQ(t.decode(std::vector<int32_t>{x96}), kFffd);
  EXPECT_EQ(t.decode(std::vector<int32_t>{e4b8, x96}), "\xE4\xB8\x96");
  EXPECT_EQ(t.decode(std::vector<int32_t>{9999, the}), " the")
      << "an id with no token is skipped, as tokenizers does";
  EXPECT_TRUE(t.is_special(261));
  EXPECT_FALSE(t.is_special(263));
  EXPECT_EQ(t.bos_id(), 261) << "from the post-processor's template";
  EXPECT_TRUE(t.eos_ids().empty());
  // generation_config.json beside it names the end ids (a list, as Llama-3-Instruct's).
  std::ofstream(dir_ / "bytelevel" / "generation_config.json")
      << R"({"bos_token_id": 261, "eos_token_id": [262, 263]})";
  const HfTokenizer with_config = HfTokenizer::load(dir_ / "bytelevel" / "tokenizer.json");
  EXPECT_EQ(with_config.eos_ids(), (std::vector<int32_t>{262, 263}));
}

TEST_F(HfTokenizerTest, SentencePieceStyleDecodes) {
  const HfTokenizer t = HfTokenizer::load(sentencepiece_bpe(llama2_decoder(), "llama2"));
  const int32_t the = t.token_to_id("\u2581the").value(), hello = t.token_to_id("\u2581hello").value();
  const int32_t space = t.token_to_id("\u2581").value();
  const auto byte = [](int b) { return 3 + b; };
  EXPECT_EQ(t.decode(std::vector<int32_t>{1, the, hello, 2}), "the hello");
  EXPECT_EQ(t.decode(std::vector<int32_t>{1, the, hello, 2}, false), "<s> the hello</s>");
  // 世 is not in the vocabulary: three byte tokens; split, each incomplete byte shows as U+FFFD.
  EXPECT_EQ(t.decode(std::vector<int32_t>{the, space, byte(0xE4), byte(0xB8), byte(0x96)}),
            "the \xE4\xB8\x96");
  EXPECT_EQ(t.decode(std::vector<int32_t>{the, space, byte(0xE4), byte(0xB8)}), "the " + kFffd + kFffd);
  EXPECT_EQ(t.decode(std::vector<int32_t>{byte('\n'), hello}), "\n hello");
  EXPECT_EQ(t.bos_id(), 1);
  std::ofstream(dir_ / "llama2" / "tokenizer_config.json")
      << R"({"bos_token": "<s>", "eos_token": {"content": "</s>"}})";
  EXPECT_EQ(HfTokenizer::load(dir_ / "llama2").eos_ids(), std::vector<int32_t>{2});

  const HfTokenizer meta = HfTokenizer::load(sentencepiece_bpe(metaspace_decoder(), "metaspace"));
  EXPECT_EQ(meta.decode(std::vector<int32_t>{1, the, hello}), "the hello");
}

TEST_F(HfTokenizerTest, UnreadableFilesAreNamed) {
  expect_error_containing<IoError>([&] { HfTokenizer::load(dir_ / "none.json"); }, "none.json");
  std::ofstream(dir_ / "bad.json") << "{";
  expect_error_containing<IoError>([&] { HfTokenizer::load(dir_ / "bad.json"); }, "is not valid JSON");
  nlohmann::json j = {{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}}}}},
                      {"decoder", {{"type", "WordPiece"}, {"prefix", "##"}}}};
  std::ofstream(dir_ / "wp.json") << j.dump();
  expect_error_containing<NotImplemented>([&] { HfTokenizer::load(dir_ / "wp.json"); },
                                          "decoder type 'WordPiece'");
}

// The reference: the `tokenizers` library on random ids (characters split across tokens, invalid byte runs,
// special tokens anywhere), both with special tokens skipped and shown.
TEST_F(HfTokenizerTest, DecodesAsTheTokenizersLibrary) {
  const std::string reason = hf_python_unavailable_reason(script());
  if (!reason.empty()) GTEST_SKIP() << "no reference: " << reason;
  const std::vector<fs::path> files = {byte_level_bpe(), sentencepiece_bpe(llama2_decoder(), "llama2"),
                                       sentencepiece_bpe(metaspace_decoder(), "metaspace")};
  std::mt19937 gen(7);
  for (const fs::path& file : files) {
    const HfTokenizer t = HfTokenizer::load(file);
    std::vector<std::vector<int32_t>> sequences(300);
    for (auto& ids : sequences) {
      ids.resize(gen() % 13);
      // Half of the draws among the last 12 ids (merges, pieces, added tokens), the rest anywhere.
      for (int32_t& id : ids) {
        id = static_cast<int32_t>(gen() % 2 ? gen() % t.vocab_size() : t.vocab_size() - 1 - gen() % 12);
      }
    }
    for (bool skip : {true, false}) {
      const std::vector<std::string> expected = hf_python_decode(script(), file, sequences, skip);
      ASSERT_EQ(expected.size(), sequences.size());
      int mismatches = 0;
      for (size_t i = 0; i < sequences.size(); ++i) {
        const std::string got = t.decode(sequences[i], skip);
        if (got != expected[i] && ++mismatches <= 5) {
          ADD_FAILURE() << file << " sequence " << i << " (skip_special " << skip << "): ours '" << got
                        << "', tokenizers '" << expected[i] << "'";
        }
      }
      EXPECT_EQ(mismatches, 0) << file;
    }
  }
}

TEST_F(HfTokenizerTest, PromptsEncodeThroughPythonAndDecodeBack) {
  const std::string reason = hf_python_unavailable_reason(script());
  if (!reason.empty()) GTEST_SKIP() << "no reference: " << reason;
  const std::string text = "the hello \xE4\xB8\x96 w\xC3\xA9";  // "the hello 世 wé"
  for (const fs::path& file : {byte_level_bpe(), sentencepiece_bpe(llama2_decoder(), "llama2")}) {
    const TextTokenizer t = TextTokenizer::load(file, {false, script()});
    const std::vector<int32_t> ids = t.encode_prompt(text);
    ASSERT_GT(ids.size(), 2u);
    EXPECT_EQ(ids[0], HfTokenizer::load(file).bos_id()) << file << ": the template's BOS";
    EXPECT_EQ(t.decode(ids), text) << file;
  }
  expect_error_containing([&] { hf_python_encode(script(), dir_ / "missing.json", "x"); },
                          "failed (exit status 1)");
}

}  // namespace
}  // namespace coat::data
