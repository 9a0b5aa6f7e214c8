// Reading an HF export directory back for the tests, checking on the way what transformers relies on: one
// model.safetensors, or shards named model-0000i-of-0000N.safetensors whose model.safetensors.index.json
// names every tensor once and the right file, with total_size the sum of the tensors' bytes and each shard
// within the limit unless it holds a single larger tensor.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "coat/io/safetensors.h"
#include "io_test_util.h"

namespace coat::io::test {

/// Every tensor of the export by name (EXPECT failures for an inconsistent layout).
inline std::map<std::string, Tensor> read_hf_export(const std::filesystem::path& dir,
                                                    uint64_t max_shard_bytes) {
  std::map<std::string, Tensor> out;
  if (std::filesystem::exists(dir / "model.safetensors")) {
    EXPECT_FALSE(std::filesystem::exists(dir / "model.safetensors.index.json")) << dir;
    const SafetensorsReader st = SafetensorsReader::open(dir / "model.safetensors");
    for (const SafetensorsEntry& e : st.entries()) out[e.name] = st.read(e.name);
    return out;
  }
  const nlohmann::json index = nlohmann::json::parse(read_file_text(dir / "model.safetensors.index.json"));
  const nlohmann::json& weight_map = index.at("weight_map");
  std::map<std::string, std::string> files;  // name -> file, as found in the shards
  uint64_t total = 0;
  size_t count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() == ".safetensors") ++count;
  }
  for (size_t f = 1; f <= count; ++f) {
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", f, count);
    EXPECT_TRUE(std::filesystem::exists(dir / name)) << dir / name;
    if (!std::filesystem::exists(dir / name)) continue;
    const SafetensorsReader shard = SafetensorsReader::open(dir / name);
    EXPECT_EQ(shard.metadata().count("format") ? shard.metadata().at("format") : "", "pt") << name;
    uint64_t bytes = 0;
    for (const SafetensorsEntry& e : shard.entries()) {
      EXPECT_TRUE(files.emplace(e.name, name).second) << e.name << " is in two shards";
      bytes += e.bytes();
      out[e.name] = shard.read(e.name);
    }
    EXPECT_TRUE(bytes <= max_shard_bytes || shard.entries().size() == 1)
        << name << " holds " << bytes << " bytes, over the limit of " << max_shard_bytes;
    total += bytes;
  }
  EXPECT_EQ(index.at("metadata").at("total_size").get<uint64_t>(), total);
  EXPECT_EQ(weight_map.size(), files.size());
  for (const auto& [name, file] : files) {
    EXPECT_EQ(weight_map.value(name, std::string("(none)")), file) << name;
  }
  return out;
}

}  // namespace coat::io::test
