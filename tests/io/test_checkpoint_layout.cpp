// The layout in a format-2 meta.json: JSON round trip, validation errors that name what is wrong, and the
// differences that refuse another model or state storage (the slices may differ: that is a re-slice).
#include <gtest/gtest.h>

#include "coat/core/error.h"
#include "coat/io/checkpoint_layout.h"
#include "expect_error.h"

namespace coat::io {
namespace {

using coat::test::expect_error_containing;

CheckpointLayout two_units() {
  CheckpointLayout l;
  l.units = {{"embed", 256, {{"model.embed_tokens.weight", {8, 32}, 0}}},
             {"head", 320, {{"model.norm.weight", {32}, 0}, {"lm_head.weight", {8, 32}, 64}}}};
  l.kinds = {{"master", DType::F32, 1}, {"exp_avg", DType::E4M3, 1}, {"exp_avg.log2_scale", DType::F32, 128}};
  l.files = {{{0, 128}, {0, 256}}, {{128, 128}, {256, 64}}};
  return l;
}

TEST(CheckpointLayoutTest, RoundTripsThroughJson) {
  const CheckpointLayout l = two_units();
  const nlohmann::json j = l.to_json();
  EXPECT_EQ(j["files"][1]["file"], "rank_00001.bin");
  EXPECT_EQ(j["files"][1]["slices"][1], nlohmann::json::array({256, 64}));
  const CheckpointLayout back = CheckpointLayout::from_json(j, "test");
  EXPECT_EQ(back.to_json(), j);
  EXPECT_EQ(back.whole_entries(1, 2), 3);  // 320 elements in groups of 128
  EXPECT_EQ(back.stored_entries(1, 1, 2).first, 2);
  EXPECT_EQ(back.stored_entries(1, 1, 2).count, 1);
  EXPECT_EQ(layout_difference(l, back), std::nullopt);
}

TEST(CheckpointLayoutTest, ValidationNamesTheProblem) {
  const auto bad = [](const std::function<void(CheckpointLayout&)>& edit, const std::string& needle) {
    CheckpointLayout l = two_units();
    edit(l);
    expect_error_containing<IoError>([&] { CheckpointLayout::from_json(l.to_json(), "ck"); }, needle);
  };
  bad(
      [](CheckpointLayout& l) {
        l.files[1][0] = {100, 156};
      },
      "begins at element 100, inside a group of 128");
  bad(
      [](CheckpointLayout& l) {
        l.files[1][1] = {256, 32};
      },
      "the slices of unit 'head' do not cover it once");
  bad([](CheckpointLayout& l) { l.files[1][1] = {128, 192}; }, "overlap");
  bad([](CheckpointLayout& l) { l.units[1].params[1].offset = 128; },
      "'lm_head.weight' [8,32] at offset 128 lies outside unit 'head'");
  bad([](CheckpointLayout& l) { l.kinds.erase(l.kinds.begin()); }, "no \"master\" kind");
  bad([](CheckpointLayout& l) { l.files[0].pop_back(); }, "rank file 0 has 1 slices for 2 units");
  nlohmann::json j = two_units().to_json();
  j["files"][1]["file"] = "rank_00007.bin";
  expect_error_containing<IoError>([&] { CheckpointLayout::from_json(j, "ck"); },
                                   "file 1 is 'rank_00007.bin'");
  j = two_units().to_json();
  j["kinds"][1]["dtype"] = "f8";
  expect_error_containing<IoError>([&] { CheckpointLayout::from_json(j, "ck"); }, "unknown dtype 'f8'");
  j.erase("units");
  expect_error_containing<IoError>([&] { CheckpointLayout::from_json(j, "ck"); },
                                   "checkpoint layout (ck): malformed");
}

TEST(CheckpointLayoutTest, DifferencesNameTheKeyAndBothValues) {
  const CheckpointLayout a = two_units();
  CheckpointLayout b = two_units();
  b.files = {{{0, 256}, {0, 320}}};  // another world size: no difference
  EXPECT_EQ(layout_difference(a, b), std::nullopt);
  b.units[1].numel = 384;
  EXPECT_EQ(layout_difference(a, b), "unit 1 ('head') numel: checkpoint 320, this run 384");
  b = two_units();
  b.units[1].params[1].shape = {16, 32};
  EXPECT_EQ(layout_difference(a, b), "'lm_head.weight' shape: checkpoint [8,32], this run [16,32]");
  b = two_units();
  b.kinds = {{"master", DType::F32, 1}, {"exp_avg", DType::F32, 1}};
  EXPECT_EQ(layout_difference(a, b),
            "stored tensors per unit: checkpoint [master f32, exp_avg e4m3, exp_avg.log2_scale "
            "f32 per 128 elements], this run [master f32, exp_avg f32]");
}

}  // namespace
}  // namespace coat::io
