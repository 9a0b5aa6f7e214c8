// Native tokenizer.json encoding (HfEncoder): the ids the `tokenizers` library recorded for tricky strings on
// the fixtures of scripts/make_hf_encoder_fixtures.py (Llama-3 and GPT-2 byte-level BPE, Llama-2 style
// SentencePiece BPE with byte fallback, Metaspace, fused <unk>), decoded back through HfTokenizer; where
// python3 has `tokenizers`, the live library on random strings; the pre-tokenizer scanners and the Unicode
// table on known cases; and the refusals that name the tokenizer.json key.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "expect_error.h"

#include "coat/core/error.h"
#include "coat/data/hf_encoder.h"
#include "coat/data/hf_python.h"
#include "coat/data/hf_tokenizer.h"
#include "coat/data/text_tokenizer.h"
#include "coat/data/unicode_class.h"

namespace coat::data {
namespace {

namespace fs = std::filesystem;
using coat::test::expect_error_containing;

fs::path fixtures() {
  return fs::path(COAT_SOURCE_DIR) / "tests" / "data" / "fixtures" / "hf_encoder";
}
fs::path script() {
  return fs::path(COAT_SOURCE_DIR) / "scripts" / "hf_encode.py";
}

nlohmann::json expected() {
  std::ifstream in(fixtures() / "expected.json");
  return nlohmann::json::parse(in);
}

TEST(UnicodeClass, TableAnswersKnownCodePoints) {
  EXPECT_EQ(unicode_class(U'a'), kUnicodeLetter);
  EXPECT_EQ(unicode_class(U'\u00e9'), kUnicodeLetter);
  EXPECT_EQ(unicode_class(U'\u4e16'), kUnicodeLetter);      // 世
  EXPECT_EQ(unicode_class(U'\u0661'), kUnicodeNumber);      // Arabic-Indic one
  EXPECT_EQ(unicode_class(U'\u00bd'), kUnicodeNumber);      // ½ (No)
  EXPECT_EQ(unicode_class(U'\u3000'), kUnicodeWhiteSpace);  // ideographic space
  EXPECT_EQ(unicode_class(U'\u0085'), kUnicodeWhiteSpace);
  EXPECT_EQ(unicode_class(U'\x1c'), 0) << "isspace() in Python, not White_Space";
  EXPECT_EQ(unicode_class(U'\u0301'), 0) << "a combining mark is M, not L";
  EXPECT_EQ(unicode_class(U'\U0001F600'), 0);
  EXPECT_EQ(unicode_class(U'\U0001D400'), kUnicodeLetter);  // mathematical bold A
  EXPECT_EQ(unicode_class(U'\U0010FFFF'), 0);
  EXPECT_FALSE(unicode_class_table_version().empty());
}

TEST(Utf8, InvalidInputNamesTheByteOffset) {
  EXPECT_EQ(find_invalid_utf8("ok \xE4\xB8\x96"), std::string_view::npos);
  EXPECT_EQ(find_invalid_utf8("ab\xE4\xB8"), 2u);           // truncated
  EXPECT_EQ(find_invalid_utf8("a\xED\xA0\x80"), 1u);        // a surrogate
  EXPECT_EQ(find_invalid_utf8("\xC0\xAF"), 0u);             // overlong
  EXPECT_EQ(find_invalid_utf8("xyz\xF4\x90\x80\x80"), 3u);  // past U+10FFFF
  expect_error_containing<InvalidArgument>([] { decode_utf8("abc\xFF", "the prompt"); },
                                           "the prompt is not valid UTF-8 at byte offset 3");
}

std::vector<std::string> split_strings(std::string_view text, HfSplitPattern pattern) {
  const Utf8Text t = decode_utf8(text, "test");
  std::vector<std::string> out;
  for (const auto& [b, e] : hf_split_isolated(t.code_points, pattern))
    out.emplace_back(text.substr(t.offsets[b], t.offsets[e] - t.offsets[b]));
  return out;
}

// Splits the `tokenizers` library gives (pre_tokenize_str with the Split pre-tokenizer).
TEST(HfSplit, FollowsTheRegexChoices) {
  using V = std::vector<std::string>;
  EXPECT_EQ(split_strings("a  \n\n  b", HfSplitPattern::kLlama3), (V{"a", "  \n\n", " ", " b"}));
  EXPECT_EQ(split_strings("it'\u017f ok", HfSplitPattern::kLlama3), (V{"it", "'\u017f", " ok"}))
      << "(?i:'s) folds the long s";
  EXPECT_EQ(split_strings("IT'S", HfSplitPattern::kLlama3), (V{"IT", "'S"}));
  EXPECT_EQ(split_strings("IT'S", HfSplitPattern::kGpt2), (V{"IT", "'", "S"})) << "GPT-2's is case-sensitive";
  EXPECT_EQ(split_strings("x \x1c y", HfSplitPattern::kLlama3), (V{"x", " \x1c", " y"}));
  EXPECT_EQ(split_strings("a \u00a0b", HfSplitPattern::kLlama3), (V{"a", " ", "\u00a0b"}));
  EXPECT_EQ(split_strings("1234567", HfSplitPattern::kLlama3), (V{"123", "456", "7"}));
  EXPECT_EQ(split_strings("1234567", HfSplitPattern::kGpt2), (V{"1234567"}));
  EXPECT_EQ(split_strings("hi!!\n\nyo  ", HfSplitPattern::kLlama3), (V{"hi", "!!\n\n", "yo", "  "}));
  EXPECT_EQ(split_strings("hi  there", HfSplitPattern::kGpt2), (V{"hi", " ", " there"}));
}

// The fixtures' recorded ids, with and without the template's special tokens, and the decode of them
// (the library's, recorded; the text itself for the byte-level files, which lose nothing).
TEST(HfEncoder, FixturesEncodeAsTheTokenizersLibrary) {
  const nlohmann::json all = expected();
  ASSERT_GE(all.size(), 6u);
  for (const auto& [name, fixture] : all.items()) {
    const HfEncoder encoder = HfEncoder::load(fixtures() / name);  // the directory works
    const HfTokenizer decoder = HfTokenizer::load(fixtures() / name / "tokenizer.json");
    ASSERT_GT(fixture.at("cases").size(), 40u);
    for (const nlohmann::json& c : fixture.at("cases")) {
      const auto text = c.at("text").get<std::string>();
      const auto ids = c.at("ids").get<std::vector<int32_t>>();
      const auto plain = c.at("ids_no_special").get<std::vector<int32_t>>();
      EXPECT_EQ(encoder.encode(text, true), ids) << name << ": '" << text << "'";
      EXPECT_EQ(encoder.encode(text, false), plain) << name << ": '" << text << "' without special tokens";
      const std::string decoded = decoder.decode(encoder.encode(text, false), /*skip_special_tokens=*/false);
      EXPECT_EQ(decoded, c.at("decoded").get<std::string>()) << name << ": '" << text << "'";
      if (fixture.at("round_trip").get<bool>() && text.find("<mask>") == std::string::npos) {
        EXPECT_EQ(decoded, text) << name;
      }
    }
  }
}

TEST(HfEncoder, InvalidUtf8IsRefusedWithItsOffset) {
  const HfEncoder encoder = HfEncoder::load(fixtures() / "llama3" / "tokenizer.json");
  expect_error_containing<InvalidArgument>([&] { encoder.encode("caf\xC3(", true); }, "byte offset 3");
}

/// A random string of fragments that stress the pre-tokenizers, byte fallback and added tokens.
std::string random_text(std::mt19937& gen) {
  static const std::vector<std::string> fragments = {"a",
                                                     "the",
                                                     "The",
                                                     " ",
                                                     "  ",
                                                     "\n",
                                                     "\r\n",
                                                     "\t",
                                                     "'s",
                                                     "'S",
                                                     "'ll",
                                                     "'Re",
                                                     "n't",
                                                     "'",
                                                     "1",
                                                     "23",
                                                     "4567",
                                                     "\u00e9",
                                                     "e\u0301",
                                                     "\u4e16\u754c",
                                                     "\U0001F600",
                                                     "\U0001F44D\U0001F3FD",
                                                     "!",
                                                     "?..",
                                                     "_",
                                                     "-",
                                                     "$",
                                                     "<|eot_id|>",
                                                     "<|begin_of_text|>",
                                                     "<extra>",
                                                     "<mask>",
                                                     "<s>",
                                                     "</s>",
                                                     "<unk>",
                                                     "<0x41>",
                                                     "\u017f",
                                                     "\u00a0",
                                                     "\u3000",
                                                     "\u03a9",
                                                     "\u00df",
                                                     "\x1c",
                                                     "x",
                                                     "Hello",
                                                     "world",
                                                     "\u2581",
                                                     "\u0661",
                                                     "\ufeff",
                                                     "ing"};
  std::string s;
  for (size_t n = gen() % 14; n > 0; --n) s += fragments[gen() % fragments.size()];
  return s;
}

// The reference: the live `tokenizers` library through scripts/hf_encode.py on random strings.
TEST(HfEncoder, EncodesAsTheLiveTokenizersLibrary) {
  const std::string reason = hf_python_unavailable_reason(script());
  if (!reason.empty()) GTEST_SKIP() << "no reference: " << reason;
  std::mt19937 gen(11);
  const nlohmann::json all = expected();
  for (const auto& [name, fixture] : all.items()) {
    const fs::path file = fixtures() / name / "tokenizer.json";
    const HfEncoder encoder = HfEncoder::load(file);
    std::vector<std::string> texts(300);
    for (std::string& t : texts) t = random_text(gen);
    for (bool special : {true, false}) {
      const std::vector<std::vector<int32_t>> want = hf_python_encode_many(script(), file, texts, special);
      ASSERT_EQ(want.size(), texts.size());
      int mismatches = 0;
      for (size_t i = 0; i < texts.size(); ++i) {
        if (encoder.encode(texts[i], special) != want[i] && ++mismatches <= 5)
          ADD_FAILURE() << name << ": '" << texts[i] << "' (special " << special << ") differs";
      }
      EXPECT_EQ(mismatches, 0) << name;
    }
  }
}

class HfEncoderRefusal : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("coat_hf_enc_" + std::to_string(::getpid()) + "_" + info->name());
    fs::create_directories(dir_);
    std::ifstream in(fixtures() / "llama3" / "tokenizer.json");
    base_ = nlohmann::json::parse(in);
  }
  void TearDown() override { fs::remove_all(dir_); }
  /// The Llama-3 fixture with `edit` applied, written out.
  template <typename Edit>
  fs::path variant(Edit edit) {
    nlohmann::json j = base_;
    edit(j);
    const fs::path path = dir_ / detail::concat("v", count_++, ".json");
    std::ofstream(path) << j.dump();
    return path;
  }
  void expect_refused(const fs::path& path, const std::string& needle) {
    expect_error_containing<NotImplemented>([&] { HfEncoder::load(path); }, needle);
  }
  fs::path dir_;
  nlohmann::json base_;
  int count_ = 0;
};

TEST_F(HfEncoderRefusal, UnsupportedFeaturesNameTheirKey) {
  expect_refused(variant([](auto& j) { j["normalizer"] = {{"type", "NFC"}}; }), "normalizer.type 'NFC'");
  expect_refused(variant([](auto& j) {
                   j["normalizer"] = {
                       {"type", "Sequence"},
                       {"normalizers", {{{"type", "Prepend"}, {"prepend", "_"}}, {{"type", "Lowercase"}}}}};
                 }),
                 "normalizer.normalizers[1].type 'Lowercase'");
  expect_refused(variant([](auto& j) {
                   j["normalizer"] = {{"type", "Replace"}, {"pattern", {{"Regex", " +"}}}, {"content", " "}};
                 }),
                 "normalizer.pattern");
  expect_refused(variant([](auto& j) {
                   j["pre_tokenizer"] = {{"type", "Whitespace"}};
                 }),
                 "pre_tokenizer.type 'Whitespace'");
  expect_refused(
      variant([](auto& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\d+"; }),
      "pre_tokenizer.pretokenizers[0].pattern");
  expect_refused(variant([](auto& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; }),
                 "pre_tokenizer.pretokenizers[0].behavior");
  expect_refused(variant([](auto& j) { j["model"]["type"] = "Unigram"; }), "model.type 'Unigram'");
  expect_refused(variant([](auto& j) { j["model"]["dropout"] = 0.1; }), "model.dropout");
  expect_refused(variant([](auto& j) { j["model"]["continuing_subword_prefix"] = "##"; }),
                 "model.continuing_subword_prefix");
  expect_refused(variant([](auto& j) { j["added_tokens"][0]["single_word"] = true; }),
                 "added_tokens[0].single_word");
  expect_refused(
      variant([](auto& j) {
        j["post_processor"] = {{"type", "RobertaProcessing"}, {"sep", {"</s>", 2}}, {"cls", {"<s>", 0}}};
      }),
      "post_processor.type 'RobertaProcessing'");
  expect_refused(variant([](auto& j) { j["truncation"] = {{"max_length", 8}}; }), "truncation");
  expect_error_containing<InvalidArgument>(
      [&] { HfEncoder::load(variant([](auto& j) { j["model"]["merges"][0] = "nospace"; })); },
      "model.merges[0]");
  expect_error_containing<InvalidArgument>(
      [&] { HfEncoder::load(variant([](auto& j) { j["added_tokens"].back()["id"] = 300; })); },
      "is a model token's id");
}

// TextTokenizer encodes natively (no Python: the script path does not exist) and falls back to Python for a
// refused file, saying which key made it.
TEST_F(HfEncoderRefusal, TextTokenizerPrefersTheNativeEncoder) {
  const fs::path llama3 = fixtures() / "llama3" / "tokenizer.json";
  const TextTokenizer native = TextTokenizer::load(llama3, {false, dir_ / "no_such_script.py"});
  const std::string text = "Hello, \u4e16\u754c! It's 2024.";
  EXPECT_EQ(native.encode_prompt(text), HfEncoder::load(llama3).encode(text, true));
  EXPECT_EQ(native.decode(native.encode_prompt(text)), text);
  EXPECT_EQ(native.description().find("Python"), std::string::npos) << native.description();

  const fs::path nfc = variant([](auto& j) { j["normalizer"] = {{"type", "NFC"}}; });
  const TextTokenizer fallback = TextTokenizer::load(nfc, {false, dir_ / "no_such_script.py"});
  EXPECT_NE(fallback.description().find("normalizer.type 'NFC'"), std::string::npos)
      << fallback.description();
  expect_error_containing([&] { fallback.encode_prompt(text); }, "normalizer.type 'NFC'");
}

}  // namespace
}  // namespace coat::data
