// HF export: save_pretrained's shard plan and size strings, the files of an export (tensors byte for byte,
// config.json, generation_config.json, the sharded index), and the staged output directory (a refused or
// failed export leaves the output as it was). Exports of checkpoints written by several ranks:
// tests/dist/hf_export_test.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <random>

#include "expect_error.h"
#include "hf_export_check.h"
#include "io_test_util.h"

#include "coat/core/error.h"
#include "coat/io/checkpoint.h"
#include "coat/io/checkpoint_reader.h"
#include "coat/io/hf_export.h"
#include "coat/io/safetensors.h"
#include "coat/io/staged_directory.h"
#include "coat/models/unit_layout.h"
#include "coat/ops/copy.h"

namespace coat::io {
namespace {

using coat::test::expect_error_containing;
namespace fs = std::filesystem;

std::vector<SafetensorsTensorSpec> specs_of_sizes(const std::vector<int64_t>& bytes) {
  std::vector<SafetensorsTensorSpec> out;
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string name = "t";  // not "t" + std::to_string(i): GCC 12's -Wrestrict misfires on it
    name += std::to_string(i);
    out.push_back({name, DType::U8, {bytes[i]}});
  }
  return out;
}

TEST(HfShardSize, ParsesHubAndBinaryUnits) {
  EXPECT_EQ(parse_shard_size("5GB"), 5'000'000'000u);
  EXPECT_EQ(parse_shard_size("500MB"), 500'000'000u);
  EXPECT_EQ(parse_shard_size(" 10kb "), 10'000u);
  EXPECT_EQ(parse_shard_size("1.5GB"), 1'500'000'000u);
  EXPECT_EQ(parse_shard_size("2GiB"), 2u << 30);
  EXPECT_EQ(parse_shard_size("3MiB"), 3u << 20);
  EXPECT_EQ(parse_shard_size("12345"), 12345u);
  for (const char* bad : {"", "GB", "5XB", "0", "0MB", "-5GB", "5 G B", "1.2.3GB"}) {
    expect_error_containing([&] { parse_shard_size(bad); }, "is not a size");
  }
}

// huggingface_hub's own case (tests/test_serialization.py, sizes 6, 10, 30, 2, 2 under 10), whose split
// split_state_dict_into_shards_factory gives as layer_1 | layer_3 | layer_2 | layer_4, layer_5: the large
// tensor gets a file of its own at once, before the file it interrupted.
TEST(HfShardPlan, SplitsAsHuggingfaceHub) {
  const HfShardPlan plan = plan_hf_shards(specs_of_sizes({6, 10, 30, 2, 2}), 10);
  EXPECT_EQ(plan.tensors, (std::vector<std::vector<size_t>>{{0}, {2}, {1}, {3, 4}}));
  EXPECT_EQ(plan.files, (std::vector<std::string>{
                            "model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors",
                            "model-00003-of-00004.safetensors", "model-00004-of-00004.safetensors"}));
  EXPECT_EQ(plan.total_bytes, 50u);
  EXPECT_TRUE(plan.sharded());
  const HfShardPlan one = plan_hf_shards(specs_of_sizes({6, 10, 30, 2, 2}), 50);
  EXPECT_EQ(one.files, std::vector<std::string>{"model.safetensors"});
  EXPECT_EQ(one.tensors, (std::vector<std::vector<size_t>>{{0, 1, 2, 3, 4}}));
  EXPECT_FALSE(one.sharded());
  const HfShardPlan mid = plan_hf_shards(specs_of_sizes({3, 30, 3, 3}), 10);
  EXPECT_EQ(mid.tensors, (std::vector<std::vector<size_t>>{{1}, {0, 2, 3}}));
}

TEST(HfShardPlan, RandomSizesKeepTheRules) {
  std::mt19937 gen(11);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<int64_t> sizes(1 + gen() % 30);
    for (int64_t& s : sizes) s = 1 + gen() % 100;
    const uint64_t limit = 1 + gen() % 150;
    const HfShardPlan plan = plan_hf_shards(specs_of_sizes(sizes), limit);
    std::vector<int> seen(sizes.size(), 0);
    uint64_t total = 0;
    for (const std::vector<size_t>& file : plan.tensors) {
      uint64_t bytes = 0;
      for (size_t i : file) {
        ++seen[i];
        bytes += static_cast<uint64_t>(sizes[i]);
      }
      total += bytes;
      EXPECT_TRUE(bytes <= limit || file.size() == 1)
          << "trial " << trial << ": a file of " << bytes << " bytes";
    }
    EXPECT_EQ(seen, std::vector<int>(sizes.size(), 1)) << "trial " << trial;
    EXPECT_EQ(total, plan.total_bytes);
    EXPECT_EQ(plan.files.size(), plan.tensors.size());
  }
}

class HfExportTest : public test::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    config_.hidden_size = 8;
    config_.intermediate_size = 16;
    config_.num_hidden_layers = 2;
    config_.num_attention_heads = 2;
    config_.num_key_value_heads = 1;
    config_.vocab_size = 32;
    config_.max_position_embeddings = 16;
  }
  /// A format-1 checkpoint with random masters (and an optimizer tensor the export must leave out).
  fs::path save(const std::vector<std::string>& leave_out = {}, const std::string& run = "run") {
    std::mt19937 gen(3);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (const models::UnitLayout& unit : models::unit_layouts(config_)) {
      for (const auto& [name, shape] : unit.params) {
        Tensor t = Tensor::empty(ctx_, shape, DType::F32);
        for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = normal(gen);
        if (std::find(leave_out.begin(), leave_out.end(), name) == leave_out.end())
          tensors.emplace_back(name, t);
      }
    }
    tensors.emplace_back("embed.exp_avg", Tensor::empty(ctx_, {4}, DType::F32));
    const nlohmann::json meta = {{"config", {{"model", config_.to_json()}}}};
    return save_checkpoint(dir_ / run, 7, meta, tensors);
  }
  static nlohmann::json read_json(const fs::path& p) {
    return nlohmann::json::parse(test::read_file_text(p));
  }

  models::ModelConfig config_;
  ContextPtr ctx_ = std::make_shared<CpuContext>();
};

TEST_F(HfExportTest, WritesEveryTensorAndTheConfigs) {
  const fs::path ck = save();
  const CheckpointReader reader = CheckpointReader::open(ck);
  for (DType dtype : {DType::F32, DType::BF16}) {
    const fs::path out = dir_ / ("hf_" + std::string(dtype_name(dtype)));
    const HfExportResult r = export_hf_model(ck, out, {dtype, kDefaultMaxShardBytes, false});
    EXPECT_EQ(r.step, 7);
    EXPECT_EQ(r.file_count, 1u);
    EXPECT_EQ(r.tensor_count, 1u + 2 * 9 + 2);  // embeddings, 9 per block, final norm and lm_head
    const SafetensorsReader st = SafetensorsReader::open(out / "model.safetensors");
    EXPECT_EQ(st.metadata().at("format"), "pt");
    size_t i = 0;
    uint64_t bytes = 0;
    for (const models::UnitLayout& unit : models::unit_layouts(config_)) {
      for (const auto& [name, shape] : unit.params) {
        ASSERT_LT(i, st.entries().size());
        EXPECT_EQ(st.entries()[i++].name, name) << "HF's state dict order";
        const Tensor expected = ops::cast(reader.read(name), dtype);
        const Tensor got = st.read(name);
        ASSERT_EQ(got.dtype(), dtype);
        ASSERT_EQ(got.shape(), shape);
        EXPECT_EQ(std::memcmp(got.data_ptr(), expected.data_ptr(), got.nbytes()), 0) << name;
        bytes += got.nbytes();
      }
    }
    EXPECT_EQ(st.entries().size(), i) << "no optimizer state in the export";
    EXPECT_EQ(r.total_bytes, bytes);
    const nlohmann::json config = read_json(out / "config.json");
    EXPECT_EQ(config.at("architectures"), nlohmann::json::array({"LlamaForCausalLM"}));
    EXPECT_EQ(config.at("torch_dtype"), dtype == DType::BF16 ? "bfloat16" : "float32");
    EXPECT_EQ(models::ModelConfig::from_hf_json(config), config_);
    const nlohmann::json generation = read_json(out / "generation_config.json");
    EXPECT_EQ(generation.at("bos_token_id"), config.at("bos_token_id"));
    EXPECT_EQ(generation.at("eos_token_id"), config.at("eos_token_id"));
    EXPECT_FALSE(fs::exists(out / "model.safetensors.index.json"));
  }
  // Nothing but the outputs beside the run: no staging directory is left.
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"hf_" + std::string(dtype_name(DType::BF16)),
                                             "hf_" + std::string(dtype_name(DType::F32)), "run"}));
}

// A run fine-tuned from an imported model names the HF tokenizer.json (data.tokenizer): its special ids go
// into config.json and generation_config.json, not LlamaConfig's defaults 1 and 2 (an exported Llama-3 had
// eos_token_id 2, so transformers' generate did not stop at <|eot_id|>).
TEST_F(HfExportTest, SpecialIdsComeFromAnHfTokenizerJson) {
  const fs::path tok = dir_ / "tok";
  fs::create_directories(tok);
  nlohmann::json vocab = nlohmann::json::object();
  for (int i = 0; i < 28; ++i) vocab[std::string("w").append(std::to_string(i))] = i;  // GCC 12 -Wrestrict
  nlohmann::json added = nlohmann::json::array();
  for (const auto& [id, content] :
       std::vector<std::pair<int, std::string>>{{28, "<bos>"}, {29, "<eos>"}, {30, "<eot>"}}) {
    added.push_back({{"id", id},
                     {"content", content},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  std::ofstream(tok / "tokenizer.json") << nlohmann::json{
      {"model", {{"type", "WordLevel"}, {"vocab", vocab}, {"unk_token", "w0"}}},
      {"added_tokens", added},
      {"decoder", nullptr},
      {"post_processor", nullptr}}.dump();
  std::ofstream(tok / "tokenizer_config.json") << R"({"bos_token": "<bos>", "eos_token": "<eos>"})";
  const fs::path ck = save();
  nlohmann::json meta = read_json(ck / "meta.json");
  meta["config"]["data"] = {{"tokenizer", (tok / "tokenizer.json").string()}};
  std::vector<std::pair<std::string, Tensor>> tensors;
  const CheckpointReader reader = CheckpointReader::open(ck);
  for (const models::UnitLayout& unit : models::unit_layouts(config_)) {
    for (const auto& [name, shape] : unit.params) tensors.emplace_back(name, reader.read(name));
  }
  const fs::path with_tok = save_checkpoint(dir_ / "run_tok", 7, meta, tensors);
  HfExportResult r = export_hf_model(with_tok, dir_ / "hf1", {DType::BF16, kDefaultMaxShardBytes, false});
  EXPECT_EQ(r.special_tokens_source, "tokenizer " + (tok / "tokenizer.json").string());
  for (const char* file : {"config.json", "generation_config.json"}) {
    const nlohmann::json j = read_json(dir_ / "hf1" / file);
    EXPECT_EQ(j.at("bos_token_id"), 28) << file;
    EXPECT_EQ(j.at("eos_token_id"), 29) << file;
  }
  // generation_config.json beside the tokenizer (Llama-3-Instruct lists several end ids) comes first.
  std::ofstream(tok / "generation_config.json") << R"({"bos_token_id": 28, "eos_token_id": [29, 30]})";
  r = export_hf_model(with_tok, dir_ / "hf2", {DType::BF16, kDefaultMaxShardBytes, false});
  for (const char* file : {"config.json", "generation_config.json"}) {
    EXPECT_EQ(read_json(dir_ / "hf2" / file).at("eos_token_id"), nlohmann::json::array({29, 30})) << file;
  }
  // Without one the model config's defaults stand, as before.
  r = export_hf_model(ck, dir_ / "hf3", {DType::BF16, kDefaultMaxShardBytes, false});
  EXPECT_EQ(r.special_tokens_source, "the model config");
}

TEST_F(HfExportTest, ShardsWithAnIndexAsSavePretrained) {
  const fs::path ck = save();
  const fs::path single = dir_ / "single", sharded = dir_ / "sharded";
  export_hf_model(ck, single, {DType::F32, kDefaultMaxShardBytes, false});
  // 1024 bytes: the embedding and lm_head (32 x 8 x 4) get a file each, the blocks' matrices share files.
  const uint64_t limit = 1024;
  const HfExportResult r = export_hf_model(ck, sharded, {DType::F32, limit, false});
  ASSERT_GT(r.file_count, 2u);
  const std::map<std::string, Tensor> whole = test::read_hf_export(single, kDefaultMaxShardBytes);
  const std::map<std::string, Tensor> parts = test::read_hf_export(sharded, limit);
  ASSERT_EQ(parts.size(), whole.size());
  for (const auto& [name, t] : whole) {
    ASSERT_TRUE(parts.contains(name)) << name;
    EXPECT_EQ(test::raw_bytes(parts.at(name)), test::raw_bytes(t)) << name;
  }
  EXPECT_FALSE(fs::exists(sharded / "model.safetensors"));
  const nlohmann::json index = read_json(sharded / "model.safetensors.index.json");
  EXPECT_EQ(index.at("metadata").at("total_size").get<uint64_t>(), r.total_bytes);
  EXPECT_EQ(index.at("metadata").at("total_parameters").get<int64_t>(), config_.parameter_count());
  // As transformers writes it: sorted keys, two-space indents, a final newline.
  EXPECT_EQ(test::read_file_text(sharded / "model.safetensors.index.json"), index.dump(2) + "\n");
}

TEST_F(HfExportTest, RefusesANonEmptyOutputUnlessForced) {
  const fs::path ck = save();
  const fs::path out = dir_ / "out";
  fs::create_directories(out);
  export_hf_model(ck, out, {});  // an empty directory is taken
  EXPECT_TRUE(fs::exists(out / "model.safetensors"));
  test::write_file_bytes(out / "note.txt", {'x'});
  expect_error_containing([&] { export_hf_model(ck, out, {}); }, "exists and is not empty; pass --force");
  EXPECT_TRUE(fs::exists(out / "note.txt"));
  const HfExportResult r = export_hf_model(ck, out, {DType::BF16, kDefaultMaxShardBytes, /*force=*/true});
  EXPECT_EQ(r.output, fs::absolute(out).lexically_normal());
  EXPECT_FALSE(fs::exists(out / "note.txt")) << "--force replaces the directory";
  EXPECT_EQ(read_json(out / "config.json").at("torch_dtype"), "bfloat16");
  // A directory that is not an earlier export is never replaced, even with --force.
  const fs::path other = dir_ / "other";
  fs::create_directories(other);
  test::write_file_bytes(other / "thesis.tex", {'y'});
  expect_error_containing(
      [&] {
        export_hf_model(ck, other, {DType::F32, kDefaultMaxShardBytes, true});
      },
      "it has no \"config.json\", so it is not an earlier output");
  EXPECT_TRUE(fs::exists(other / "thesis.tex"));
}

TEST_F(HfExportTest, AFailedExportLeavesNothing) {
  const fs::path ck = save({"model.layers.1.mlp.down_proj.weight"});
  const fs::path out = dir_ / "out";
  expect_error_containing([&] { export_hf_model(ck, out, {}); },
                          "has no tensor 'model.layers.1.mlp.down_proj.weight'");
  EXPECT_FALSE(fs::exists(out));
  for (const auto& e : fs::directory_iterator(dir_))
    EXPECT_EQ(e.path().filename(), "run") << "left behind: " << e.path();
  // A failure while an earlier export is being replaced leaves the earlier one in place.
  const fs::path good = save({}, "good");
  export_hf_model(good, out, {});
  const std::vector<uint8_t> before = test::read_file_bytes(out / "model.safetensors");
  EXPECT_THROW(export_hf_model(ck, out, {DType::F32, kDefaultMaxShardBytes, true}), IoError);
  EXPECT_EQ(test::read_file_bytes(out / "model.safetensors"), before);
}

}  // namespace
}  // namespace coat::io
