// Parameter counts of the published architectures (the numbers the issue gives), read from configs/.
#include <gtest/gtest.h>

#include <fstream>

#include "coat/models/model_config.h"
#include "coat/models/transformer.h"
#include "coat/ops/runtime.h"

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

}  // namespace
}  // namespace coat::models
