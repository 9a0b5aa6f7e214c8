// The precision section and the recipe-dependent optimizer-state default of the training config:
// precision.bf16_layers (strict type and range checks naming the key, negative indices from the end) and
// optim.state_dtype = "auto" (fp8_expand under coat, fp32 otherwise), resolved to a concrete storage in the
// parsed config, its resolved document and the moment specs.
#include <gtest/gtest.h>

#include <fstream>

#include "coat/train/train_config.h"
#include "expect_error.h"

namespace coat::train {
namespace {

nlohmann::json small_config(const std::string& recipe) {
  std::ifstream in(std::string(COAT_SOURCE_DIR) + "/configs/test_small.json");
  nlohmann::json c = nlohmann::json::parse(in);  // 2 layers
  c["model"]["num_hidden_layers"] = 4;
  c["precision"]["recipe"] = recipe;
  return c;
}

TrainConfig parse(const nlohmann::json& c) {
  return parse_train_config(c, "cfg.json");
}

TEST(PrecisionConfig, Bf16LayersDefaultToNone) {
  const TrainConfig c = parse(small_config("coat"));
  EXPECT_TRUE(c.precision.bf16_layers.empty());
  EXPECT_EQ(c.resolved.at("precision").at("bf16_layers"), nlohmann::json::array());
  const models::PrecisionRecipe r = recipe_of(c);
  EXPECT_EQ(r.name, "coat");
  EXPECT_TRUE(r.fp8_linears);
  EXPECT_TRUE(r.compress_activations);
  EXPECT_TRUE(r.bf16_layers.empty());
}

TEST(PrecisionConfig, Fp8BlockIsARecipe) {
  nlohmann::json doc = small_config("fp8_block");
  doc["precision"]["bf16_layers"] = {-1};
  const TrainConfig c = parse(doc);
  EXPECT_EQ(c.precision.recipe, "fp8_block");
  EXPECT_EQ(c.resolved.at("precision").at("recipe"), "fp8_block");
  const models::PrecisionRecipe r = recipe_of(c);
  EXPECT_TRUE(r.fp8_linears);
  EXPECT_TRUE(r.block_scaled);
  EXPECT_FALSE(r.compress_activations);
  EXPECT_TRUE(r.linear(0, models::LinearRole::GateUp).block_scaled);
  EXPECT_FALSE(r.linear(3, models::LinearRole::GateUp).fp8);
  // An unknown recipe: the message lists every valid one.
  doc["precision"]["recipe"] = "fp4";
  test::expect_error_containing<ConfigError>([&] { parse(doc); }, "expected one of: fp32, bf16, fp8, fp8_block, coat");
}

TEST(PrecisionConfig, Bf16LayersCountNegativeIndicesFromTheEnd) {
  nlohmann::json doc = small_config("fp8");
  doc["precision"]["bf16_layers"] = {0, -1};
  const TrainConfig c = parse(doc);
  EXPECT_EQ(c.precision.bf16_layers, (std::vector<int64_t>{0, -1}));  // as written
  EXPECT_EQ(c.resolved.at("precision").at("bf16_layers"), nlohmann::json({0, -1}));
  const models::PrecisionRecipe r = recipe_of(c);
  EXPECT_EQ(r.bf16_layers, (std::vector<int64_t>{0, 3}));
  EXPECT_FALSE(r.linear(0, models::LinearRole::Qkv).fp8);
  EXPECT_TRUE(r.linear(1, models::LinearRole::Qkv).fp8);
  EXPECT_FALSE(r.linear(3, models::LinearRole::Down).fp8);
  // The resolved document parses again to the same config.
  EXPECT_EQ(parse(c.resolved).resolved, c.resolved);
}

TEST(PrecisionConfig, Bf16LayersOfAnotherTypeNameTheKey) {
  for (const nlohmann::json& bad :
       {nlohmann::json(1), nlohmann::json("0"), nlohmann::json({1.5}), nlohmann::json({true}),
        nlohmann::json({"1"}), nlohmann::json::parse("[[1]]"),
        nlohmann::json({uint64_t{18446744073709551615u}})}) {
    nlohmann::json doc = small_config("coat");
    doc["precision"]["bf16_layers"] = bad;
    test::expect_error_containing<ConfigError>(
        [&] { parse(doc); }, "cfg.json: config: 'precision.bf16_layers' must be an array of integers");
  }
}

TEST(PrecisionConfig, Bf16LayersOutOfRangeNameTheKey) {
  for (int64_t layer : {4, -5, 100}) {
    nlohmann::json doc = small_config("coat");
    doc["precision"]["bf16_layers"] = {1, layer};
    test::expect_error_containing<ConfigError>(
        [&] { parse(doc); }, "precision.bf16_layers: layer " + std::to_string(layer) +
                                 " is out of range for a model of 4 layers (expected -4 .. 3)");
  }
  // The edges are fine, also as an override.
  nlohmann::json doc = small_config("coat");
  apply_override(doc, "precision.bf16_layers=[-4,3]");
  EXPECT_EQ(recipe_of(parse(doc)).bf16_layers, (std::vector<int64_t>{0, 3}));
}

TEST(PrecisionConfig, UnknownPrecisionKeyIsRefused) {
  nlohmann::json doc = small_config("coat");
  doc["precision"]["bf16_layer"] = {0};
  test::expect_error_containing<ConfigError>([&] { parse(doc); },
                                             "unknown key 'precision.bf16_layer'; did you mean "
                                             "'precision.bf16_layers'?");
}

TEST(StateDtypeConfig, AutoIsFp8ExpandUnderCoatAndFp32Otherwise) {
  for (const std::string& recipe : std::vector<std::string>{"fp32", "bf16", "fp8", "fp8_block", "coat"}) {
    const std::string expected = recipe == "coat" ? "fp8_expand" : "fp32";
    for (const bool spelled_out : {false, true}) {
      nlohmann::json doc = small_config(recipe);
      if (spelled_out) doc["optim"]["state_dtype"] = "auto";
      const TrainConfig c = parse(doc);
      EXPECT_EQ(default_state_dtype(recipe), expected);
      EXPECT_EQ(c.optim.state_dtype, expected) << recipe;
      EXPECT_EQ(c.optim.exp_avg_dtype, expected) << recipe;
      EXPECT_EQ(c.optim.exp_avg_sq_dtype, expected) << recipe;
      // The resolved document (config.json, checkpoints) holds the concrete storage, never "auto".
      const nlohmann::json& optim = c.resolved.at("optim");
      EXPECT_EQ(optim.at("state_dtype"), expected) << recipe;
      EXPECT_EQ(optim.at("exp_avg_dtype"), expected) << recipe;
      EXPECT_EQ(optim.at("exp_avg_sq_dtype"), expected) << recipe;
      const ops::MomentEncoding encoding =
          recipe == "coat" ? ops::MomentEncoding::FP8Expand : ops::MomentEncoding::F32;
      EXPECT_EQ(exp_avg_spec(c.optim).encoding, encoding) << recipe;
      EXPECT_EQ(exp_avg_sq_spec(c.optim).encoding, encoding) << recipe;
    }
  }
}

TEST(StateDtypeConfig, ExplicitStoragesWinOverTheRecipe) {
  nlohmann::json doc = small_config("coat");
  doc["optim"]["state_dtype"] = "fp32";
  TrainConfig c = parse(doc);
  EXPECT_EQ(c.resolved.at("optim").at("state_dtype"), "fp32");
  EXPECT_EQ(exp_avg_spec(c.optim).encoding, ops::MomentEncoding::F32);

  // One moment overridden, the other following the recipe; "auto" on one moment is the recipe's storage.
  doc = small_config("coat");
  doc["optim"]["exp_avg_sq_dtype"] = "bf16";
  c = parse(doc);
  EXPECT_EQ(exp_avg_spec(c.optim).encoding, ops::MomentEncoding::FP8Expand);
  EXPECT_EQ(exp_avg_sq_spec(c.optim).encoding, ops::MomentEncoding::BF16);
  doc = small_config("coat");
  doc["optim"]["state_dtype"] = "fp8";
  doc["optim"]["exp_avg_dtype"] = "auto";
  c = parse(doc);
  EXPECT_EQ(c.resolved.at("optim").at("exp_avg_dtype"), "fp8_expand");
  EXPECT_EQ(exp_avg_sq_spec(c.optim).encoding, ops::MomentEncoding::FP8);

  // Re-parsing the resolved document under another recipe keeps the concrete storage it holds.
  nlohmann::json again = parse(small_config("coat")).resolved;
  again["precision"]["recipe"] = "bf16";
  EXPECT_EQ(parse(again).optim.state_dtype, "fp8_expand");
}

TEST(StateDtypeConfig, UnknownStorageListsAuto) {
  nlohmann::json doc = small_config("coat");
  doc["optim"]["state_dtype"] = "fp8_expnad";
  test::expect_error_containing<ConfigError>(
      [&] { parse(doc); },
      "'optim.state_dtype' = \"fp8_expnad\" is not valid; expected one of: auto, fp32, bf16, fp8, fp8_expand "
      "(did you mean \"fp8_expand\"?)");
}

}  // namespace
}  // namespace coat::train
