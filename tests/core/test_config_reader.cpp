// Strict config reading: suggestions for unknown keys, typed errors with paths, choices, overrides.
#include <gtest/gtest.h>

#include "coat/core/config_reader.h"

namespace coat {
namespace {

using nlohmann::json;

template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ConfigReader, ReadsValuesAndDefaults) {
  const json doc = json::parse(R"({"optim": {"lr": 4e-4, "betas": [0.9, 0.95], "warmup_steps": 2000}})");
  ConfigSection root(doc, "");
  ConfigSection optim = root.section("optim");
  EXPECT_DOUBLE_EQ(optim.get<double>("lr", 1.0), 4e-4);
  EXPECT_EQ(optim.get<int64_t>("warmup_steps", 0), 2000);
  EXPECT_EQ(optim.get<std::vector<double>>("betas", {}), (std::vector<double>{0.9, 0.95}));
  EXPECT_EQ(optim.get<double>("weight_decay", 0.1), 0.1);
  EXPECT_NO_THROW(optim.finish());
  EXPECT_NO_THROW(root.finish());
}

TEST(ConfigReader, UnknownKeyNamesPathAndSuggestion) {
  const json doc = json::parse(R"({"optim": {"lr": 1e-3, "weight_decya": 0.1}})");
  ConfigSection optim = ConfigSection(doc, "").section("optim");
  optim.get<double>("lr", 0.0);
  optim.get<double>("weight_decay", 0.0);
  EXPECT_NE(error_of([&] { optim.finish(); }).find("unknown key 'optim.weight_decya'; did you mean 'optim.weight_decay'?"),
            std::string::npos);
}

TEST(ConfigReader, TypeAndRangeErrors) {
  const json doc = json::parse(R"({"lr": "fast", "steps": 1.5, "flag": 1, "layers": -2})");
  ConfigSection s(doc, "train");
  EXPECT_EQ(error_of([&] { s.get<double>("lr", 0.0); }), "config: 'train.lr' must be a number, got \"fast\"");
  EXPECT_EQ(error_of([&] { s.get<int64_t>("steps", 0); }), "config: 'train.steps' must be an integer, got 1.5");
  EXPECT_EQ(error_of([&] { s.get<bool>("flag", false); }),
            "config: 'train.flag' must be a boolean (true/false), got 1");
  EXPECT_NE(error_of([&] { s.get<uint64_t>("layers", 1); }).find("non-negative"), std::string::npos);
  EXPECT_NE(error_of([&] { s.check_range<double>("lr", 2.0, 0.0, 1.0); }).find("'train.lr' = 2 is out of range"),
            std::string::npos);
  EXPECT_EQ(error_of([&] { s.require<int64_t>("seq_len"); }), "config: missing required key 'train.seq_len'");
}

TEST(ConfigReader, ChoicesAreStrict) {
  const json doc = json::parse(R"({"state_dtype": "fp8_expnad"})");
  ConfigSection s(doc, "optim");
  const std::string message =
      error_of([&] { s.choice("state_dtype", "fp32", {"fp32", "bf16", "fp8", "fp8_expand"}); });
  EXPECT_NE(message.find("expected one of: fp32, bf16, fp8, fp8_expand"), std::string::npos) << message;
  EXPECT_NE(message.find("did you mean \"fp8_expand\"?"), std::string::npos) << message;
}

TEST(ConfigReader, MisspelledRequiredKeyIsAnUnknownKeyWithItsSuggestion) {
  const json doc = json::parse(R"({"hidden_size": 64, "mx_position_embeddings": 256, "rope_theta": 1e4})");
  ConfigSection s(doc, "model");
  EXPECT_EQ(s.require<int64_t>("hidden_size"), 64);
  // Keys not read yet remain (the typo among them): the missing key is reported by finish(), not here.
  EXPECT_EQ(s.require<int64_t>("max_position_embeddings"), 0);
  EXPECT_NO_THROW(s.check_range<int64_t>("max_position_embeddings", 0, 1, 1 << 20));
  s.get<double>("rope_theta", 0.0);
  const std::string message = error_of([&] { s.finish(); });
  EXPECT_NE(
      message.find("unknown key 'model.mx_position_embeddings'; did you mean 'model.max_position_embeddings'?"),
      std::string::npos)
      << message;
  EXPECT_NE(message.find("missing required key 'model.max_position_embeddings'"), std::string::npos)
      << message;
}

TEST(ConfigReader, MissingRequiredKeyWithoutATypoIsReportedByFinish) {
  const json doc = json::parse(R"({"lr": 1e-3, "warmup_steps": 10})");
  ConfigSection s(doc, "optim");
  s.get<double>("lr", 0.0);
  EXPECT_EQ(s.require<int64_t>("max_steps"), 0);  // warmup_steps is not read yet: it might be a misspelling
  s.get<int64_t>("warmup_steps", 0);
  EXPECT_EQ(error_of([&] { s.finish(); }), "config: missing required key 'optim.max_steps'");
}

enum class Fruit { Apple, Pear };
std::string_view to_string(Fruit f) { return f == Fruit::Apple ? "apple" : "pear"; }

TEST(ConfigReader, EnumChoicesUseTheEnumsNames) {
  const json doc = json::parse(R"({"fruit": "pear", "other": "apel"})");
  ConfigSection s(doc, "basket");
  EXPECT_EQ(s.choice("fruit", Fruit::Apple, {Fruit::Apple, Fruit::Pear}), Fruit::Pear);
  EXPECT_EQ(s.choice("absent", Fruit::Apple, {Fruit::Apple, Fruit::Pear}), Fruit::Apple);
  EXPECT_EQ(error_of([&] { s.choice("other", Fruit::Pear, {Fruit::Apple, Fruit::Pear}); }),
            "config: 'basket.other' = \"apel\" is not valid; expected one of: apple, pear "
            "(did you mean \"apple\"?)");
  const auto upper = [](Fruit f) { return f == Fruit::Apple ? std::string("APPLE") : std::string("PEAR"); };
  const json caps = json::parse(R"({"fruit": "PEAR"})");
  ConfigSection capitals(caps, "basket");
  EXPECT_EQ(capitals.choice("fruit", Fruit::Apple, {Fruit::Apple, Fruit::Pear}, upper), Fruit::Pear);
}

TEST(ConfigReader, Overrides) {
  json doc = json::parse(R"({"optim": {"lr": 1e-3}})");
  apply_override(doc, "optim.lr=3e-4");
  apply_override(doc, "precision.recipe=coat");
  apply_override(doc, "data.paths=[\"a.bin\", \"b.bin\"]");
  apply_override(doc, "train.resume=true");
  EXPECT_DOUBLE_EQ(doc["optim"]["lr"].get<double>(), 3e-4);
  EXPECT_EQ(doc["precision"]["recipe"], "coat");
  EXPECT_EQ(doc["data"]["paths"].size(), 2u);
  EXPECT_EQ(doc["train"]["resume"], true);
  EXPECT_NE(error_of([&] { apply_override(doc, "novalue"); }).find("expected section.key=value"), std::string::npos);
  EXPECT_NE(error_of([&] { apply_override(doc, "optim.lr.x=1"); }).find("'optim.lr' is not a section"),
            std::string::npos);
}

TEST(ConfigReader, EditDistance) {
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(closest_match("hiden_size", {"hidden_size", "vocab_size"}), "hidden_size");
  EXPECT_EQ(closest_match("zzzzzz", {"hidden_size", "vocab_size"}), "");
}

}  // namespace
}  // namespace coat
