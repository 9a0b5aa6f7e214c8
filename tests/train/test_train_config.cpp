// The precision section and the recipe-dependent optimizer-state default of the training config:
// precision.bf16_layers (strict type and range checks naming the key, negative indices from the end) and
// optim.state_dtype = "auto" (fp8_expand under coat, fp32 otherwise), resolved to a concrete storage in the
// parsed config, its resolved document and the moment specs. Every choice parsed once into its enum; the
// resolved document built from the sections' to_json, a fixed point of parsing; the dist section;
// checkpoint.async and checkpoint.io_threads; a misspelled required key reported as unknown.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <string>

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

TEST(PrecisionConfig, CompressAttentionIsOffByDefaultAndReachesTheRecipe) {
  EXPECT_FALSE(recipe_of(parse(small_config("coat"))).compress_attention);
  nlohmann::json doc = small_config("coat");
  apply_override(doc, "precision.compress_attention=true");
  const TrainConfig c = parse(doc);
  EXPECT_TRUE(c.precision.compress_attention);
  EXPECT_EQ(c.resolved.at("precision").at("compress_attention"), true);
  EXPECT_TRUE(recipe_of(c).compress_attention);
  EXPECT_TRUE(recipe_of(c).linear(0, models::LinearRole::Out).save_fp8_input);
  doc["precision"]["compress_attention"] = "yes";
  test::expect_error_containing<ConfigError>([&] { parse(doc); }, "precision.compress_attention");
}

TEST(PrecisionConfig, CacheWeightTransposeIsOnByDefaultAndReachesTheRecipe) {
  EXPECT_TRUE(recipe_of(parse(small_config("coat"))).keep_weight_transpose);
  for (const char* recipe : {"fp8", "coat"}) {
    nlohmann::json doc = small_config(recipe);
    apply_override(doc, "precision.cache_weight_transpose=false");
    const TrainConfig c = parse(doc);
    EXPECT_FALSE(c.precision.cache_weight_transpose) << recipe;
    EXPECT_EQ(c.resolved.at("precision").at("cache_weight_transpose"), false) << recipe;
    EXPECT_FALSE(recipe_of(c).keep_weight_transpose) << recipe;
    EXPECT_FALSE(recipe_of(parse(c.resolved)).keep_weight_transpose) << recipe;  // the resolved document says so
  }
  // Only the per-tensor FP8 recipes keep such transposes: elsewhere false is an error naming the key and recipe.
  for (const char* recipe : {"fp32", "bf16", "fp8_block"}) {
    nlohmann::json doc = small_config(recipe);
    doc["precision"]["cache_weight_transpose"] = false;
    test::expect_error_containing<ConfigError>(
        [&] { parse(doc); }, std::string("'precision.cache_weight_transpose' = false makes the FP8 weights' "
                                         "transposes in the backward, which only the per-tensor FP8 recipes (fp8, "
                                         "coat) keep; 'precision.recipe' is ") + recipe);
    doc["precision"]["cache_weight_transpose"] = true;
    EXPECT_TRUE(parse(doc).precision.cache_weight_transpose) << recipe;
  }
  nlohmann::json doc = small_config("coat");
  doc["precision"]["cache_weight_transpose"] = "no";
  test::expect_error_containing<ConfigError>([&] { parse(doc); }, "precision.cache_weight_transpose");
}

TEST(PrecisionConfig, Fp8BlockIsARecipe) {
  nlohmann::json doc = small_config("fp8_block");
  doc["precision"]["bf16_layers"] = {-1};
  const TrainConfig c = parse(doc);
  EXPECT_EQ(c.precision.recipe, models::RecipeKind::FP8Block);
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
      EXPECT_EQ(state_dtype_name(default_state_dtype(models::parse_recipe_kind(recipe))), expected);
      EXPECT_EQ(state_dtype_name(c.optim.state_dtype), expected) << recipe;
      EXPECT_EQ(state_dtype_name(c.optim.exp_avg_encoding()), expected) << recipe;
      EXPECT_EQ(state_dtype_name(c.optim.exp_avg_sq_encoding()), expected) << recipe;
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
  EXPECT_EQ(state_dtype_name(parse(again).optim.state_dtype), "fp8_expand");
}

TEST(StateDtypeConfig, UnknownStorageListsAuto) {
  nlohmann::json doc = small_config("coat");
  doc["optim"]["state_dtype"] = "fp8_expnad";
  test::expect_error_containing<ConfigError>(
      [&] { parse(doc); },
      "'optim.state_dtype' = \"fp8_expnad\" is not valid; expected one of: auto, fp32, bf16, fp8, fp8_expand "
      "(did you mean \"fp8_expand\"?)");
}

TEST(TrainConfigChoices, EachChoiceIsParsedIntoItsEnum) {
  nlohmann::json doc = small_config("fp8");
  apply_override(doc, "data.format=u32");
  apply_override(doc, "train.device=cuda");
  apply_override(doc, "train.on_nonfinite=skip");
  apply_override(doc, "train.recompute=blocks");
  apply_override(doc, "optim.schedule=linear");
  apply_override(doc, "optim.state_dtype=bf16");
  apply_override(doc, "optim.exp_avg_sq_dtype=fp8");
  apply_override(doc, "optim.exp_avg_sq_fp8=e5m2");
  apply_override(doc, "logging.progress=off");
  const TrainConfig c = parse(doc);
  EXPECT_EQ(c.data.format, DataFormat::U32);
  EXPECT_EQ(c.train.device, DeviceKind::CUDA);
  EXPECT_EQ(c.train.compute_device(), Device::cuda(0));
  EXPECT_EQ(c.train.on_nonfinite, NonfinitePolicy::Skip);
  EXPECT_EQ(c.train.recompute, models::Recompute::Blocks);
  EXPECT_EQ(c.optim.schedule, optim::LrSchedule::Linear);
  EXPECT_EQ(c.precision.recipe, models::RecipeKind::FP8);
  EXPECT_EQ(c.optim.state_dtype, ops::MomentEncoding::BF16);
  EXPECT_EQ(c.optim.exp_avg_encoding(), ops::MomentEncoding::BF16);
  EXPECT_EQ(c.optim.exp_avg_sq_encoding(), ops::MomentEncoding::FP8);
  EXPECT_EQ(c.optim.exp_avg_fp8, DType::E4M3);
  EXPECT_EQ(c.optim.exp_avg_sq_fp8, DType::E5M2);
  EXPECT_EQ(exp_avg_sq_spec(c.optim).fp8, DType::E5M2);
  EXPECT_EQ(c.logging.progress, ProgressDisplay::Off);
  // The resolved document spells each choice as the config does.
  const nlohmann::json& r = c.resolved;
  EXPECT_EQ(r.at("data").at("format"), "u32");
  EXPECT_EQ(r.at("train").at("device"), "cuda");
  EXPECT_EQ(r.at("train").at("on_nonfinite"), "skip");
  EXPECT_EQ(r.at("train").at("recompute"), "blocks");
  EXPECT_EQ(r.at("optim").at("schedule"), "linear");
  EXPECT_EQ(r.at("optim").at("state_dtype"), "bf16");
  EXPECT_EQ(r.at("optim").at("exp_avg_dtype"), "bf16");
  EXPECT_EQ(r.at("optim").at("exp_avg_sq_dtype"), "fp8");
  EXPECT_EQ(r.at("optim").at("exp_avg_fp8"), "e4m3");
  EXPECT_EQ(r.at("optim").at("exp_avg_sq_fp8"), "e5m2");
  EXPECT_EQ(r.at("precision").at("recipe"), "fp8");
  EXPECT_EQ(r.at("logging").at("progress"), "off");
  EXPECT_EQ(parse(r).resolved, r);
}

TEST(TrainConfigChoices, NamesRoundTrip) {
  for (DataFormat f : {DataFormat::Coat, DataFormat::U16, DataFormat::U32}) {
    nlohmann::json doc = small_config("bf16");
    doc["data"]["format"] = std::string(to_string(f));
    EXPECT_EQ(parse(doc).data.format, f);
  }
  for (ops::MomentEncoding e : {ops::MomentEncoding::F32, ops::MomentEncoding::BF16, ops::MomentEncoding::FP8,
                                ops::MomentEncoding::FP8Expand}) {
    EXPECT_EQ(parse_state_dtype(state_dtype_name(e)), e);
  }
  for (models::RecipeKind k : {models::RecipeKind::FP32, models::RecipeKind::BF16, models::RecipeKind::FP8,
                               models::RecipeKind::FP8Block, models::RecipeKind::Coat}) {
    EXPECT_EQ(models::parse_recipe_kind(models::to_string(k)), k);
  }
  EXPECT_EQ(parse_moment_fp8("e5m2"), DType::E5M2);
  test::expect_error_containing<ConfigError>(
      [] { parse_state_dtype("auto"); }, "optimizer state dtype 'auto' is not one of fp32, bf16, fp8, fp8_expand");
  test::expect_error_containing<ConfigError>([] { parse_moment_fp8("fp8_e4m3"); }, "is not one of e4m3, e5m2");
}

TEST(TrainConfigChoices, UnknownChoicesListTheValidNames) {
  nlohmann::json doc = small_config("bf16");
  doc["train"]["on_nonfinite"] = "ignore";
  test::expect_error_containing<ConfigError>(
      [&] { parse(doc); }, "'train.on_nonfinite' = \"ignore\" is not valid; expected one of: stop, skip");
  doc = small_config("bf16");
  doc["optim"]["schedule"] = "cosin";
  test::expect_error_containing<ConfigError>(
      [&] { parse(doc); }, "expected one of: constant, linear, cosine (did you mean \"cosine\"?)");
  doc = small_config("bf16");
  doc["optim"]["exp_avg_fp8"] = "e4m4";
  test::expect_error_containing<ConfigError>([&] { parse(doc); }, "expected one of: e4m3, e5m2");
  doc = small_config("bf16");
  doc["train"]["device"] = "gpu";
  test::expect_error_containing<ConfigError>([&] { parse(doc); }, "expected one of: cpu, cuda");
}

// The resolved document of the shipped configs: each section's to_json, and a fixed point (parsing it again
// gives the same document; as it holds every value, it is what the old, hand-assembled document held).
TEST(ResolvedConfig, IsEachSectionsToJsonAndAFixedPoint) {
  for (const char* name : {"tiny.json", "test_small.json"}) {
    const std::string path = std::string(COAT_SOURCE_DIR) + "/configs/" + name;
    for (const std::vector<std::string>& overrides :
         {std::vector<std::string>{}, std::vector<std::string>{"precision.recipe=coat"},
          std::vector<std::string>{"precision.recipe=bf16", "optim.exp_avg_dtype=bf16", "dist.world_size=8", "train.global_batch_size=128",
                                   "dist.shard_size=4", "dist.reduce_dtype=bf16", "dist.timeout_s=30.5"}}) {
      const TrainConfig c = load_train_config(path, overrides);
      const nlohmann::json& r = c.resolved;
      EXPECT_EQ(r, c.to_json()) << name;
      EXPECT_EQ(r.at("model"), c.model.to_json());
      EXPECT_EQ(r.at("data"), c.data.to_json());
      EXPECT_EQ(r.at("train"), c.train.to_json());
      EXPECT_EQ(r.at("optim"), c.optim.to_json());
      EXPECT_EQ(r.at("precision"), c.precision.to_json());
      EXPECT_EQ(r.at("dist"), c.dist.to_json());
      EXPECT_EQ(r.at("checkpoint"), c.checkpoint.to_json());
      EXPECT_EQ(r.at("logging"), c.logging.to_json());
      const TrainConfig again = parse_train_config(r, path);
      EXPECT_EQ(again.resolved.dump(2), r.dump(2)) << name;
      // Every key the document holds was read (parsing is strict), and every section is there.
      for (const char* section :
           {"model", "data", "train", "optim", "precision", "dist", "checkpoint", "logging"}) {
        EXPECT_TRUE(r.contains(section)) << section;
      }
    }
  }
}

TEST(DistConfig, DefaultsAndResolvedDocument) {
  const TrainConfig c = parse(small_config("bf16"));  // "dist": {}
  EXPECT_EQ(c.dist.world_size, 0);
  EXPECT_EQ(c.dist.shard_size, 0);
  EXPECT_TRUE(c.dist.reshard_after_forward);
  EXPECT_EQ(c.dist.prefetch, 0);
  EXPECT_EQ(c.dist.reduce_dtype, ReduceDType::FP32);
  EXPECT_DOUBLE_EQ(c.dist.timeout_s, 600.0);
  EXPECT_TRUE(c.dist.fp8_all_gather);
  EXPECT_EQ(c.resolved.at("dist"), nlohmann::json::parse(R"({"world_size": 0, "shard_size": 0,
      "reshard_after_forward": true, "prefetch": 0, "reduce_dtype": "fp32", "timeout_s": 600.0,
      "fp8_all_gather": true})"));
  // The resolved document of an earlier version ("dist": {}) still parses, to the defaults.
  nlohmann::json old = c.resolved;
  old["dist"] = nlohmann::json::object();
  EXPECT_EQ(parse(old).resolved, c.resolved);
  nlohmann::json absent = small_config("bf16");
  absent.erase("dist");
  EXPECT_EQ(parse(absent).dist.to_json(), c.dist.to_json());
}

// checkpoint.async: on by default; false reads; another type names the key. A resolved document of an earlier
// version (no "async") parses to the default.
TEST(CheckpointConfig, AsyncDefaultsToTrue) {
  nlohmann::json doc = small_config("bf16");
  const TrainConfig c = parse(doc);
  EXPECT_TRUE(c.checkpoint.async);
  EXPECT_EQ(c.resolved.at("checkpoint").at("async"), true);
  doc["checkpoint"]["async"] = false;
  EXPECT_FALSE(parse(doc).checkpoint.async);
  doc["checkpoint"]["async"] = "yes";
  test::expect_error_containing([&] { parse(doc); }, "checkpoint.async");
  nlohmann::json old = c.resolved;
  old["checkpoint"].erase("async");
  EXPECT_EQ(parse(old).resolved, c.resolved);
}

// checkpoint.io_threads: min(8, max(1, hardware threads / 2)) by default, written into the resolved document;
// values outside 1..256 and other types are refused naming the key; an earlier document without it parses.
TEST(CheckpointConfig, IoThreadsAreReadAndChecked) {
  nlohmann::json doc = small_config("bf16");
  const TrainConfig c = parse(doc);
  EXPECT_EQ(c.checkpoint.io_threads, io::default_io_threads());
  EXPECT_EQ(c.resolved.at("checkpoint").at("io_threads"), io::default_io_threads());
  doc["checkpoint"]["io_threads"] = 5;
  EXPECT_EQ(parse(doc).checkpoint.io_threads, 5);
  doc["checkpoint"]["io_threads"] = 1;
  EXPECT_EQ(parse(doc).checkpoint.io_threads, 1);
  for (const nlohmann::json& bad :
       {nlohmann::json(0), nlohmann::json(-2), nlohmann::json(257), nlohmann::json(int64_t{1} << 33)}) {
    doc["checkpoint"]["io_threads"] = bad;
    test::expect_error_containing<ConfigError>(
        [&] { parse(doc); }, "'checkpoint.io_threads' = " + bad.dump() + " is out of range");
  }
  for (const nlohmann::json& bad : {nlohmann::json("4"), nlohmann::json(2.5), nlohmann::json(true)}) {
    doc["checkpoint"]["io_threads"] = bad;
    test::expect_error_containing<ConfigError>([&] { parse(doc); }, "checkpoint.io_threads");
  }
  nlohmann::json old = c.resolved;
  old["checkpoint"].erase("io_threads");
  EXPECT_EQ(parse(old).resolved, c.resolved);
}

TEST(DistConfig, ValuesAreReadAndChecked) {
  nlohmann::json doc = small_config("coat");
  doc["dist"] = {{"world_size", 8},      {"shard_size", 4},       {"reshard_after_forward", false},
                 {"prefetch", 2},        {"reduce_dtype", "bf16"}, {"timeout_s", 120.5},
                 {"fp8_all_gather", false}};
  doc["train"]["global_batch_size"] = 8 * doc["train"].value("micro_batch_size", 1);
  const DistConfig d = parse(doc).dist;
  EXPECT_EQ(d.world_size, 8);
  EXPECT_EQ(d.shard_size, 4);
  EXPECT_FALSE(d.reshard_after_forward);
  EXPECT_EQ(d.prefetch, 2);
  EXPECT_EQ(d.reduce_dtype, ReduceDType::BF16);
  EXPECT_DOUBLE_EQ(d.timeout_s, 120.5);
  EXPECT_FALSE(d.fp8_all_gather);
  EXPECT_EQ(parse(doc).resolved.at("dist").at("reduce_dtype"), "bf16");

  const auto refused = [](const std::string& assignment, const std::string& needle) {
    nlohmann::json bad = small_config("coat");
    apply_override(bad, assignment);
    test::expect_error_containing<ConfigError>([&] { parse(bad); }, needle);
  };
  refused("dist.reduce_dtype=fp16",
          "'dist.reduce_dtype' = \"fp16\" is not valid; expected one of: fp32, bf16");
  refused("dist.prefetch=-1", "'dist.prefetch' = -1 is out of range");
  refused("dist.world_size=-2", "'dist.world_size' = -2 is out of range");
  refused("dist.timeout_s=0", "'dist.timeout_s' = 0 is out of range; expected 0 < value");
  refused("dist.timeout_s=-5", "'dist.timeout_s' = -5 is out of range");
  refused("dist.reshard_after_forward=1", "'dist.reshard_after_forward' must be a boolean");
  refused("dist.prefech=2", "unknown key 'dist.prefech'; did you mean 'dist.prefetch'?");
  nlohmann::json uneven = small_config("coat");
  uneven["dist"] = {{"world_size", 6}, {"shard_size", 4}};
  test::expect_error_containing<ConfigError>([&] { parse(uneven); },
                                             "'dist.shard_size' = 4 must divide 'dist.world_size' = 6");
  // A shard size alone (the world size taken from mpirun) is checked when the world is known.
  uneven["dist"] = {{"shard_size", 4}};
  EXPECT_EQ(parse(uneven).dist.shard_size, 4);
}

TEST(DistConfig, TheLaunchedWorldSetsTheWorldSizeAndSplitsTheBatch) {
  nlohmann::json doc = small_config("bf16");
  doc["train"]["micro_batch_size"] = 1;
  doc["train"]["global_batch_size"] = 12;
  const TrainConfig one = parse_train_config(doc, "cfg.json");
  EXPECT_EQ(one.ranks(), 1);
  EXPECT_EQ(one.accumulation_steps(), 12);
  const TrainConfig four = parse_train_config(doc, "cfg.json", /*launched_world=*/4);
  EXPECT_EQ(four.dist.world_size, 4);
  EXPECT_EQ(four.accumulation_steps(), 3);
  EXPECT_EQ(four.resolved.at("dist").at("world_size"), 4);
  doc["dist"]["world_size"] = 3;
  test::expect_error_containing<ConfigError>([&] { parse_train_config(doc, "cfg.json", 4); },
                                             "'dist.world_size' = 3 but mpirun started 4 ranks");
  doc["dist"]["world_size"] = 5;  // planning for 5 ranks: 12 sequences do not split
  test::expect_error_containing<ConfigError>([&] { parse_train_config(doc, "cfg.json"); },
                                             "x the 5 ranks of 'dist.world_size'");
}

TEST(RequiredKeys, AMisspelledRequiredKeyIsReportedAsUnknownWithItsSuggestion) {
  nlohmann::json doc = small_config("bf16");
  doc["model"]["mx_position_embeddings"] = doc["model"]["max_position_embeddings"];
  doc["model"].erase("max_position_embeddings");
  test::expect_error_containing<ConfigError>(
      [&] { parse(doc); },
      "cfg.json: config: unknown key 'model.mx_position_embeddings'; did you mean "
      "'model.max_position_embeddings'?");
  // The same in the other sections with required keys.
  doc = small_config("bf16");
  doc["data"]["seqlen"] = doc["data"]["seq_len"];
  doc["data"].erase("seq_len");
  test::expect_error_containing<ConfigError>([&] { parse(doc); },
                                             "unknown key 'data.seqlen'; did you mean 'data.seq_len'?");
  doc = small_config("bf16");
  doc["optim"]["lrr"] = doc["optim"]["lr"];
  doc["optim"].erase("lr");
  test::expect_error_containing<ConfigError>([&] { parse(doc); },
                                             "unknown key 'optim.lrr'; did you mean 'optim.lr'?");
  // A required key simply missing is still reported as missing.
  doc = small_config("bf16");
  doc["train"].erase("max_steps");
  test::expect_error_containing<ConfigError>([&] { parse(doc); },
                                             "cfg.json: config: missing required key 'train.max_steps'");
}

// Sharded slices are a multiple of the state group and of 128, so that no FP8 state group straddles two ranks
// (a checkpoint re-slices groups by unit offset) whatever the group size.
TEST(TrainConfigTest, ShardAlignmentHoldsWholeStateGroups) {
  OptimConfig o;
  const std::vector<std::pair<int64_t, int64_t>> cases = {{128, 128}, {32, 128}, {256, 256}, {96, 384}, {1, 128}};
  for (const auto& [group, align] : cases) {
    o.state_group_size = group;
    EXPECT_EQ(shard_alignment(o), align) << "group " << group;
  }
}

// Found by fuzz/fuzz_config: a number beyond double's range is a JSON library out_of_range exception, which
// escaped the config reader (only parse errors were caught).
TEST(ConfigText, FuzzRegressionNumberOutOfRangeIsAConfigError) {
  test::expect_error_containing<ConfigError>(
      [] { parse_train_config_text(R"({"model": {"hidden_size": 1e605}})", {}, "big.json"); },
      "big.json: not valid JSON: [json.exception.out_of_range.406] number overflow parsing '1e605'");
}

// Found by fuzz/fuzz_config: a --set value that is not valid JSON is taken as a string; one of invalid UTF-8
// made the error message (and the run directory's config.json) throw the JSON library's type_error.
TEST(ConfigText, FuzzRegressionOverrideOfInvalidUtf8IsRefused) {
  std::ifstream in(std::string(COAT_SOURCE_DIR) + "/configs/test_small.json");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  test::expect_error_containing<ConfigError>(
      [&] { parse_train_config_text(text, {"model.hidden_size=\xff\xfe"}, "c.json"); },
      "--set: the assignment is not valid UTF-8 text");
  test::expect_error_containing<ConfigError>(
      [&] { parse_train_config_text(text, {"model.hidden_size=thirty-two"}, "c.json"); },
      "'model.hidden_size' must be an integer, got \"thirty-two\"");
}

}  // namespace
}  // namespace coat::train
