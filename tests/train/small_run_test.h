// The fixture of the trainer tests that run configs/test_small.json on the CPU: a temporary directory per test
// (coat_<suite>_<pid>_<test>, '/' made '_', removed afterwards) holding a learnable token stream (a repeating pattern with
// noise, 4000 u16 tokens of a 64-token vocabulary), and that config pointed at it.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "coat/data/token_file.h"
#include "coat/train/trainer.h"

namespace coat::train {

class SmallRunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string("coat_") + test->test_suite_name() + "_" + std::to_string(::getpid()) + "_" +
                       test->name();
    std::replace(name.begin(), name.end(), '/', '_');  // parameterized suites and tests: one directory
    dir_ = std::filesystem::temp_directory_path() / name;
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    std::mt19937 rng(5);
    std::vector<uint32_t> tokens(4000);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = (rng() % 4 == 0) ? rng() % 64 : (i * 7) % 64;
    data::write_token_file(dir_ / "tokens.bin", tokens, data::TokenWidth::U16, 64);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  /// configs/test_small.json reading the token file, in run directory `run`, without a progress display.
  nlohmann::json small_config(const std::string& run) const {
    std::ifstream in(std::string(COAT_SOURCE_DIR) + "/configs/test_small.json");
    nlohmann::json c = nlohmann::json::parse(in);
    c["data"]["path"] = (dir_ / "tokens.bin").string();
    c["logging"]["run_dir"] = (dir_ / run).string();
    c["logging"]["progress"] = "off";
    return c;
  }
  /// The losses of the steps the trainer ran, in order.
  static std::vector<double> losses(const Trainer& t) {
    std::vector<double> out;
    for (const auto& r : t.history()) out.push_back(r.loss);
    return out;
  }

  std::filesystem::path dir_;
};

}  // namespace coat::train
