// Parameter counts of the published architectures (the numbers the issue gives), read from configs/.
#include <gtest/gtest.h>

#include <fstream>

#include "coat/models/model_config.h"
#include "coat/models/transformer.h"
#include "coat/ops/runtime.h"
#include "expect_error.h"

namespace coat::models {
namespace {

ModelConfig load(const std::string& name) {
  std::ifstream in(std::string(COAT_SOURCE_DIR) + "/configs/" + name + ".json");
  EXPECT_TRUE(in.good()) << name;
  nlohmann::json doc = nlohmann::json::parse(in);
  return ModelConfig::from_config(ConfigSection(doc.at("model"), "model"));
}

TEST(ModelConfig, PublishedParameterCounts) {
  EXPECT_EQ(load("llama2_7b").parameter_count(), 6738415616);
  EXPECT_EQ(load("llama2_13b").parameter_count(), 13015864320);
  EXPECT_EQ(load("olmo_1b").parameter_count(), 1176764416);
  EXPECT_EQ(load("olmo_7b").parameter_count(), 6888095744);
  // LLaMA-1 30B (32.5B parameters as published).
  EXPECT_EQ(load("llama_30b").parameter_count(), 32528943616);
}

TEST(ModelConfig, AllocatedParametersMatchTheCount) {
  ModelConfig c;
  c.hidden_size = 48;
  c.intermediate_size = 80;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 6;
  c.num_key_value_heads = 2;
  c.vocab_size = 97;
  c.max_position_embeddings = 32;
  for (bool tie : {false, true}) {
    for (Architecture a : {Architecture::Llama, Architecture::Olmo}) {
      c.tie_word_embeddings = tie;
      c.architecture = a;
      Transformer m(c, ops::make_context(Device::cpu()), DType::F32, false);
      int64_t total = 0;
      for (const auto& p : m.parameters()) total += p.value.numel();
      EXPECT_EQ(total, c.parameter_count()) << "tie " << tie << " arch " << c.architecture_name();
    }
  }
}

TEST(ModelConfig, FlopsPerTokenFollowsPaLM) {
  ModelConfig c = load("llama2_7b");
  const double n = static_cast<double>(c.matmul_parameter_count());
  EXPECT_DOUBLE_EQ(c.training_flops_per_token(2048), 6 * n + 12.0 * 32 * 4096 * 2048);
  // Matmul parameters: everything but the embedding table and the norm weights.
  EXPECT_EQ(c.matmul_parameter_count(), c.parameter_count() - 32000 * 4096 - 65 * 4096);
}

TEST(ModelConfig, StrictReading) {
  nlohmann::json m = {{"hidden_size", 64}, {"intermediate_size", 128}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                      {"vocab_size", 100}, {"max_position_embeddings", 64}, {"rope_thetta", 10000.0}};
  try {
    ModelConfig::from_config(ConfigSection(m, "model"));
    FAIL() << "expected an error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("did you mean 'model.rope_theta'"), std::string::npos) << e.what();
  }
  m.erase("rope_thetta");
  m["num_key_value_heads"] = 3;
  EXPECT_THROW(ModelConfig::from_config(ConfigSection(m, "model")), ConfigError);
  m["num_key_value_heads"] = 2;
  m["hidden_size"] = "64";
  try {
    ModelConfig::from_config(ConfigSection(m, "model"));
    FAIL() << "expected an error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("'model.hidden_size' must be an integer"), std::string::npos) << e.what();
  }
}

TEST(ModelConfig, HfJsonRoundTrip) {
  for (const char* name : {"llama2_7b", "olmo_1b"}) {
    ModelConfig c = load(name);
    EXPECT_EQ(ModelConfig::from_hf_json(c.to_hf_json()), c) << name;
  }
}

// Found by fuzz/fuzz_hf_config: an HF config.json of another shape or with values of other types threw the
// JSON library's exceptions (no key named); every refusal is now a ConfigError naming the key.
TEST(ModelConfig, FuzzRegressionHfConfigOfOtherTypesNamesTheKey) {
  nlohmann::json hf = load("test_small").to_hf_json();
  test::expect_error_containing<ConfigError>([] { ModelConfig::from_hf_json(nlohmann::json(7)); },
                                             "HF config.json: expected a JSON object, got number");
  nlohmann::json bad = hf;
  bad["hidden_size"] = "32";
  test::expect_error_containing<ConfigError>([&] { ModelConfig::from_hf_json(bad); },
                                             "'hidden_size' must be an integer, got \"32\"");
  bad = hf;
  bad["vocab_size"] = 1e30;  // was converted to an integer: undefined behaviour
  test::expect_error_containing<ConfigError>([&] { ModelConfig::from_hf_json(bad); },
                                             "'vocab_size' must be an integer, got 1e+30");
  bad = hf;
  bad["model_type"] = 3;
  test::expect_error_containing<ConfigError>([&] { ModelConfig::from_hf_json(bad); },
                                             "'model_type' must be a string, got 3");
  bad = hf;
  bad["tie_word_embeddings"] = "no";
  test::expect_error_containing<ConfigError>([&] { ModelConfig::from_hf_json(bad); },
                                             "'tie_word_embeddings' must be true or false");
  bad = hf;
  bad["num_attention_heads"] = 0;
  test::expect_error_containing<ConfigError>([&] { ModelConfig::from_hf_json(bad); },
                                             "HF config.json: model.num_attention_heads = 0 must be positive");
  EXPECT_EQ(ModelConfig::from_hf_json(hf), load("test_small"));
}

// Sizes whose parameter count overflows int64 (signed overflow in parameter_count) are refused by name.
TEST(ModelConfig, FuzzRegressionSizesBeyondAnyModelAreRefused) {
  std::ifstream in(std::string(COAT_SOURCE_DIR) + "/configs/test_small.json");
  nlohmann::json doc = nlohmann::json::parse(in).at("model");
  doc["hidden_size"] = int64_t{1} << 40;
  doc["num_attention_heads"] = 4;
  test::expect_error_containing<ConfigError>([&] { ModelConfig::from_config(ConfigSection(doc, "model")); },
                                             "give more than 2^56 parameters or elements: far beyond any model");
  EXPECT_NO_THROW(load("llama_30b"));  // the largest published config stays well inside
}

}  // namespace
}  // namespace coat::models
