// HF config.json as transformers 4.x and 5.x write it: RoPE from rope_theta / rope_scaling / rope_parameters,
// the round trip through to_hf_json, and a refusal naming the key for every setting we would not reproduce.
#include <gtest/gtest.h>

#include <string>

#include "coat/models/model_config.h"
#include "expect_error.h"

namespace coat::models {
namespace {

using nlohmann::json;

/// A Llama-3.1-shaped config.json (sizes shrunk) as transformers 4.x writes it.
json llama31_v4() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 16, "hidden_act": "silu", "hidden_size": 64,
    "initializer_range": 0.02, "intermediate_size": 160, "max_position_embeddings": 131072, "mlp_bias": false,
    "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2, "pretraining_tp": 1,
    "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.0", "use_cache": true, "vocab_size": 128256,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"}})");
}

/// The same as transformers 5.x writes it: rope_parameters only, theta inside.
json llama31_v5() {
  json j = llama31_v4();
  j.erase("rope_theta");
  j.erase("rope_scaling");
  j["rope_parameters"] = {{"rope_type", "llama3"},   {"rope_theta", 500000.0},
                          {"factor", 8.0},           {"low_freq_factor", 1.0},
                          {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  return j;
}

void expect_refused(const json& hf, const std::string& needle) {
  test::expect_error_containing<ConfigError>([&] { ModelConfig::from_hf_json(hf); }, needle);
}

TEST(HfConfig, ReadsTransformers4Llama31) {
  const ModelConfig c = ModelConfig::from_hf_json(llama31_v4());
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling, RopeScaling::llama3(8.0, 1.0, 4.0, 8192));
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.head_dim(), 16);
}

TEST(HfConfig, ReadsTransformers5RopeParametersWithoutATopLevelTheta) {
  const ModelConfig c = ModelConfig::from_hf_json(llama31_v5());
  EXPECT_EQ(c.rope_theta, 500000.0);  // not the 10000 of a missing rope_theta
  EXPECT_EQ(c, ModelConfig::from_hf_json(llama31_v4()));
  json j = llama31_v5();
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e6}};
  const ModelConfig d = ModelConfig::from_hf_json(j);
  EXPECT_EQ(d.rope_theta, 1e6);
  EXPECT_TRUE(d.rope_scaling.is_default());
}

TEST(HfConfig, NoThetaAnywhereIsTransformersDefault) {
  json j = llama31_v4();
  j.erase("rope_theta");
  j.erase("rope_scaling");
  EXPECT_EQ(ModelConfig::from_hf_json(j).rope_theta, 10000.0);
}

TEST(HfConfig, OldTypeKeyAndLinearScaling) {
  json j = llama31_v4();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  const ModelConfig c = ModelConfig::from_hf_json(j);
  EXPECT_EQ(c.rope_scaling.rope_type, RopeType::Linear);
  EXPECT_EQ(c.rope_scaling.factor, 2.0);
  j["rope_scaling"] = {{"type", "linear"}, {"rope_type", "linear"}, {"factor", 2.0}};  // 4.x writes both
  EXPECT_EQ(ModelConfig::from_hf_json(j), c);
  j["rope_scaling"] = {{"type", "dynamic"}, {"rope_type", "linear"}, {"factor", 2.0}};
  expect_refused(j, "'rope_scaling.rope_type' = \"linear\" and 'rope_scaling.type' = \"dynamic\" disagree");
}

TEST(HfConfig, Llama3OriginalContextFromTheTopLevelOrMaxPositions) {
  json j = llama31_v5();
  j["rope_parameters"].erase("original_max_position_embeddings");
  EXPECT_EQ(ModelConfig::from_hf_json(j).rope_scaling.original_max_position_embeddings, 131072);
  j["original_max_position_embeddings"] = 4096;
  EXPECT_EQ(ModelConfig::from_hf_json(j).rope_scaling.original_max_position_embeddings, 4096);
  j["rope_parameters"]["original_max_position_embeddings"] = 8192;
  expect_refused(j,
                 "'rope_parameters.original_max_position_embeddings' = 8192 and "
                 "'original_max_position_embeddings' = 4096 disagree");
}

TEST(HfConfig, DisagreeingRopePlacesAreRefused) {
  json j = llama31_v5();
  j["rope_theta"] = 10000.0;
  expect_refused(j, "'rope_theta' = 10000 and 'rope_parameters.rope_theta' = 500000 disagree");
  j = llama31_v4();
  j["rope_parameters"] = {{"rope_type", "linear"}, {"factor", 8.0}};
  expect_refused(j, "describe different RoPE");
  j["rope_parameters"] = j["rope_scaling"];  // both, equal: fine
  EXPECT_EQ(ModelConfig::from_hf_json(j), ModelConfig::from_hf_json(llama31_v4()));
  j = llama31_v5();
  j["rope_parameters"] = {{"full_attention", {{"rope_type", "default"}, {"rope_theta", 1e4}}}};
  expect_refused(j, "'rope_parameters' holds a RoPE per layer type ('rope_parameters.full_attention')");
}

TEST(HfConfig, UnsupportedRopeTypesAreRefusedByName) {
  for (const char* type : {"dynamic", "yarn", "longrope", "ntk"}) {
    json j = llama31_v4();
    j["rope_scaling"] = {{"rope_type", type}, {"factor", 4.0}};
    expect_refused(j, std::string("RoPE type \"") + type +
                          "\" ('rope_scaling.rope_type') is not supported; "
                          "supported: default, linear, llama3");
  }
  json j = llama31_v4();
  j["rope_scaling"].erase("high_freq_factor");
  expect_refused(j, "missing 'rope_scaling.high_freq_factor'");
  j = llama31_v4();
  j["rope_scaling"]["high_freq_factor"] = 1.0;
  expect_refused(j, "high_freq_factor = 1 must be greater than low_freq_factor = 1");
  j = llama31_v4();
  j["rope_scaling"] = "llama3";
  expect_refused(j, "'rope_scaling' must be a JSON object");
}

TEST(HfConfig, EverySettingThatChangesTheNumbersIsRefusedByKey) {
  const json base = llama31_v4();
  const auto refused = [&](const char* key, const json& value, const std::string& needle) {
    json j = base;
    j[key] = value;
    expect_refused(j, std::string("'") + key + "' = " + value.dump() + " is not supported");
    expect_refused(j, needle);
  };
  refused("attention_bias", true, "expected false");
  refused("mlp_bias", true, "expected false");
  refused("hidden_act", "gelu", "expected \"silu\"");
  refused("head_dim", 32, "hidden_size / num_attention_heads = 16");
  refused("sliding_window", 4096, "expected null");
  refused("qk_layernorm", true, "no norms on q and k");
  refused("use_qk_norm", true, "no norms on q and k");
  refused("attention_dropout", 0.1, "no dropout");
  refused("partial_rotary_factor", 0.5, "turns the whole head");
  json j = base;
  j["rope_scaling"]["partial_rotary_factor"] = 0.25;
  expect_refused(j, "'rope_scaling.partial_rotary_factor' = 0.25 is not supported");
  j = base;
  j["model_type"] = "olmo";
  j["clip_qkv"] = 8.0;
  expect_refused(j, "'clip_qkv' = 8.0 is not supported");
  j["model_type"] = "olmo2";
  expect_refused(j, "OLMo-2 is not supported yet");
  j["model_type"] = "mistral";
  expect_refused(j, "'model_type' = \"mistral\" is not supported; supported: llama, olmo");
  j.erase("model_type");
  expect_refused(j, "missing 'model_type'");
}

TEST(HfConfig, NeutralSettingsAreAccepted) {
  json j = llama31_v4();
  j["pretraining_tp"] = 2;  // the same products in slices
  j["sliding_window"] = nullptr;
  j["hidden_act"] = "swish";  // transformers' alias of silu
  j["qk_layernorm"] = false;
  j["rope_scaling"]["attention_factor"] = 1.0;  // a key of another rope type: transformers ignores it too
  EXPECT_EQ(ModelConfig::from_hf_json(j), ModelConfig::from_hf_json(llama31_v4()));
  j = llama31_v4();
  j["model_type"] = "olmo";
  j["clip_qkv"] = nullptr;
  EXPECT_EQ(ModelConfig::from_hf_json(j).architecture, Architecture::Olmo);
}

TEST(HfConfig, ToHfJsonWritesTheKeysBothVersionsRead) {
  ModelConfig c = ModelConfig::from_hf_json(llama31_v4());
  const json hf = c.to_hf_json();
  EXPECT_EQ(hf.at("rope_theta"), 500000.0);
  EXPECT_EQ(hf.at("rope_scaling"), llama31_v4().at("rope_scaling"));
  EXPECT_EQ(ModelConfig::from_hf_json(hf), c);
  c.rope_scaling = RopeScaling::linear(4.0);
  EXPECT_EQ(c.to_hf_json().at("rope_scaling"), json({{"rope_type", "linear"}, {"factor", 4.0}}));
  EXPECT_EQ(ModelConfig::from_hf_json(c.to_hf_json()), c);
  c.rope_scaling = RopeScaling{};
  EXPECT_FALSE(c.to_hf_json().contains("rope_scaling"));
}

}  // namespace
}  // namespace coat::models
