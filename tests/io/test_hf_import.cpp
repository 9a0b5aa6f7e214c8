// HF model directories into coat-train (io/hf_import.h): single and sharded safetensors load exactly; a
// tensor the model does not use, a missing one, a wrong shape or dtype, and a refused config setting are
// errors naming the tensor (or key) and the file.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "coat/io/hf_import.h"
#include "coat/io/safetensors.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/runtime.h"
#include "expect_error.h"
#include "io_test_util.h"

namespace coat::io {
namespace {

namespace fs = std::filesystem;
using Named = std::vector<std::pair<std::string, Tensor>>;

class HfImportTest : public test::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    config_.hidden_size = 32;
    config_.intermediate_size = 48;
    config_.num_hidden_layers = 2;
    config_.num_attention_heads = 4;
    config_.num_key_value_heads = 2;
    config_.vocab_size = 50;
    config_.max_position_embeddings = 64;
  }
  /// A model with random weights and its tensors in BF16 (what save_pretrained writes for a BF16 model).
  Named source_tensors(uint64_t seed = 3) {
    models::Transformer m(config_, ctx_, DType::F32, false);
    m.init(seed);
    Named t;
    for (const nn::Parameter& p : m.parameters()) t.emplace_back(p.name, ops::cast(p.master, DType::BF16));
    return t;
  }
  void write_config(const nlohmann::json& hf) { std::ofstream(dir_ / "config.json") << hf.dump(2); }
  /// Loads dir_ into a fresh model and returns its masters by name.
  Named load() {
    models::Transformer m(read_hf_config(dir_), ctx_, DType::F32, false);
    load_hf_weights(dir_, m);
    Named out;
    for (const nn::Parameter& p : m.parameters()) out.emplace_back(p.name, p.master);
    return out;
  }
  static void expect_equal_in_f32(const Named& got, const Named& want) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].first, want[i].first);
      EXPECT_EQ(ops::to_double_vector(got[i].second), ops::to_double_vector(want[i].second)) << got[i].first;
    }
  }

  models::ModelConfig config_;
  ContextPtr ctx_ = ops::make_context(Device::cpu());
};

TEST_F(HfImportTest, SingleFileLoadsExactly) {
  write_config(config_.to_hf_json());
  const Named src = source_tensors();
  write_safetensors(dir_ / "model.safetensors", src);
  expect_equal_in_f32(load(), src);
}

TEST_F(HfImportTest, ShardedIndexLoadsExactlyAndNamesTheShardOfAnUnusedTensor) {
  write_config(config_.to_hf_json());
  Named src = source_tensors();
  const Named first(src.begin(), src.begin() + 5), second(src.begin() + 5, src.end());
  write_safetensors(dir_ / "model-00001-of-00002.safetensors", first);
  write_safetensors(dir_ / "model-00002-of-00002.safetensors", second);
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  for (const auto& [name, t] : first) index["weight_map"][name] = "model-00001-of-00002.safetensors";
  for (const auto& [name, t] : second) index["weight_map"][name] = "model-00002-of-00002.safetensors";
  std::ofstream(dir_ / "model.safetensors.index.json") << index.dump();
  expect_equal_in_f32(load(), src);

  Named with_bias = second;
  with_bias.emplace_back("model.layers.1.self_attn.q_proj.bias", ops::zeros(ctx_, {32}, DType::BF16));
  write_safetensors(dir_ / "model-00002-of-00002.safetensors", with_bias);
  index["weight_map"]["model.layers.1.self_attn.q_proj.bias"] = "model-00002-of-00002.safetensors";
  std::ofstream(dir_ / "model.safetensors.index.json") << index.dump();
  coat::test::expect_error_containing<IoError>(
      [&] { load(); }, "'model.layers.1.self_attn.q_proj.bias' in '" +
                           (dir_ / "model-00002-of-00002.safetensors").string() + "'");
}

TEST_F(HfImportTest, AnUnusedTensorIsAnErrorNamingItAndTheFile) {
  write_config(config_.to_hf_json());
  Named src = source_tensors();
  src.emplace_back("model.layers.0.self_attn.q_proj.bias", ops::zeros(ctx_, {32}, DType::BF16));
  src.emplace_back("model.layers.0.mlp.up_proj.bias", ops::zeros(ctx_, {48}, DType::BF16));
  write_safetensors(dir_ / "model.safetensors", src);
  const std::string file = (dir_ / "model.safetensors").string();
  coat::test::expect_error_containing<IoError>([&] { load(); },
                                               "2 tensor(s) that a llama model of this config does not use");
  coat::test::expect_error_containing<IoError>([&] { load(); },
                                               "'model.layers.0.self_attn.q_proj.bias' in '" + file + "'");
  coat::test::expect_error_containing<IoError>([&] { load(); },
                                               "'model.layers.0.mlp.up_proj.bias' in '" + file + "'");
}

TEST_F(HfImportTest, TransformersOwnIgnoredTensorsAreAllowed) {
  config_.tie_word_embeddings = true;
  write_config(config_.to_hf_json());
  Named src = source_tensors();
  Named files = src;
  files.emplace_back("lm_head.weight",
                     ops::zeros(ctx_, {50, 32}, DType::BF16));  // tied: transformers ties it
  files.emplace_back("model.layers.0.self_attn.rotary_emb.inv_freq", ops::zeros(ctx_, {4}, DType::F32));
  write_safetensors(dir_ / "model.safetensors", files);
  expect_equal_in_f32(load(), src);
  config_.tie_word_embeddings = false;  // untied: lm_head.weight is a parameter, so the model needs it
  write_config(config_.to_hf_json());
  write_safetensors(dir_ / "model.safetensors", src);
  coat::test::expect_error_containing<IoError>([&] { load(); },
                                               "has no tensor 'lm_head.weight' that a llama model");
}

TEST_F(HfImportTest, MissingTensorWrongShapeAndWrongDtypeNameTheTensor) {
  write_config(config_.to_hf_json());
  Named src = source_tensors();
  Named missing(src.begin() + 1, src.end());
  write_safetensors(dir_ / "model.safetensors", missing);
  coat::test::expect_error_containing<IoError>([&] { load(); }, "has no tensor '" + src[0].first + "'");
  Named reshaped = src;
  reshaped[0].second = ops::zeros(ctx_, {51, 32}, DType::BF16);
  write_safetensors(dir_ / "model.safetensors", reshaped);
  coat::test::expect_error_containing<IoError>([&] { load(); }, "tensor '" + src[0].first +
                                                                    "' has shape (51,32) but the "
                                                                    "config implies (50,32)");
  Named integer = src;
  integer[0].second = ops::zeros(ctx_, {50, 32}, DType::I32);
  write_safetensors(dir_ / "model.safetensors", integer);
  coat::test::expect_error_containing<IoError>([&] { load(); },
                                               "tensor '" + src[0].first + "' has dtype I32");
}

TEST_F(HfImportTest, ARefusedSettingNamesTheKeyAndTheFile) {
  nlohmann::json hf = config_.to_hf_json();
  hf["attention_bias"] = true;
  write_config(hf);
  write_safetensors(dir_ / "model.safetensors", source_tensors());
  coat::test::expect_error_containing<ConfigError>(
      [&] { import_hf(dir_, dir_ / "run"); },
      (dir_ / "config.json").string() + "': HF config.json: 'attention_bias'");
  EXPECT_FALSE(fs::exists(dir_ / "run"));
}

TEST_F(HfImportTest, ImportWritesAStepZeroCheckpointOfTheConfig) {
  config_.rope_scaling = models::RopeScaling::linear(2.0);
  write_config(config_.to_hf_json());
  write_safetensors(dir_ / "model.safetensors", source_tensors());
  const io::HfImport imported = import_hf(dir_, dir_ / "run");
  EXPECT_EQ(imported.config, config_);
  EXPECT_TRUE(fs::exists(imported.checkpoint / "meta.json")) << imported.checkpoint;
  std::ifstream in(imported.checkpoint / "meta.json");
  const nlohmann::json meta = nlohmann::json::parse(in);
  EXPECT_EQ(meta.at("config").at("model"), config_.to_json());
  EXPECT_EQ(meta.at("config").at("model").at("rope_scaling").at("factor"), 2.0);
}

}  // namespace
}  // namespace coat::io
