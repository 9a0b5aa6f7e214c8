// The RoPE variants' inverse frequencies against the formulas worked out here independently, and the
// model.rope_scaling section (strict reading, validation, what the model's forward does with it).
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "coat/autograd/tape.h"
#include "coat/models/model_config.h"
#include "coat/models/rope_scaling.h"
#include "coat/models/transformer.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/rope.h"
#include "coat/ops/runtime.h"
#include "expect_error.h"

namespace coat::models {
namespace {

TEST(RopeScaling, DefaultIsThetaToTheMinusTwoIOverDhBitForBit) {
  const std::vector<double> f = RopeScaling{}.inverse_frequencies(500000.0, 16);
  ASSERT_EQ(f.size(), 8u);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(f[i], std::pow(500000.0, -2.0 * i / 16.0)) << i;
  EXPECT_EQ(f, ops::rope_inverse_frequencies(500000.0, 16));
}

TEST(RopeScaling, LinearDividesEveryFrequencyByTheFactor) {
  const std::vector<double> f = RopeScaling::linear(4.0).inverse_frequencies(10000.0, 8);
  // 10000^(-2i/8) = 1, 0.1, 0.01, 0.001; a quarter of each.
  const double expected[] = {0.25, 0.025, 0.0025, 0.00025};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(f[i], expected[i], 1e-15 * expected[i]) << i;
}

// theta 10000, Dh 8: frequencies 1, 0.1, 0.01, 0.001, wavelengths 2 pi, 20 pi, 200 pi, 2000 pi (6.3, 63, 628,
// 6283). original 1024, low 1, high 4: kept below 1024 / 4 = 256 (dims 0, 1), divided by 8 above 1024 / 1
// (dim 3), interpolated between (dim 2): s = (1024 / (200 pi) - 1) / (4 - 1) = 0.2099155...,
// f = 0.01 ((1 - s) / 8 + s) = 0.01 (1 + 7 s) / 8 = 0.003086761...
TEST(RopeScaling, Llama3KeepsHighDividesLowAndInterpolatesTheMiddle) {
  const std::vector<double> f = RopeScaling::llama3(8.0, 1.0, 4.0, 1024).inverse_frequencies(10000.0, 8);
  ASSERT_EQ(f.size(), 4u);
  const std::vector<double> base = ops::rope_inverse_frequencies(10000.0, 8);
  EXPECT_EQ(f[0], base[0]);  // high frequency: unchanged, bit for bit
  EXPECT_EQ(f[1], base[1]);
  EXPECT_NEAR(f[3], 0.001 / 8.0, 1e-15 * 0.001 / 8.0);  // low frequency: divided by factor
  const double s = (1024.0 / (200.0 * std::numbers::pi) - 1.0) / 3.0;
  EXPECT_NEAR(f[2], 0.01 * (1.0 + 7.0 * s) / 8.0, 1e-14 * f[2]);
  EXPECT_NEAR(f[2], 0.003086760967, 1e-12);  // the same number, worked out by hand
}

// Llama-3.1's own setting (theta 500000, Dh 128, factor 8, low 1, high 4, original 8192): wavelengths below
// 8192 / 4 = 2048 (dims 0..28) are kept, above 8192 (dims 35..63) divided by 8, dims 29..34 interpolated;
// the result still falls with the dimension.
TEST(RopeScaling, Llama31RegimesByDimension) {
  const std::vector<double> f = RopeScaling::llama3(8.0, 1.0, 4.0, 8192).inverse_frequencies(500000.0, 128);
  const std::vector<double> base = ops::rope_inverse_frequencies(500000.0, 128);
  ASSERT_EQ(f.size(), 64u);
  for (size_t i = 0; i < 64; ++i) {
    if (i <= 28) {
      EXPECT_EQ(f[i], base[i]) << i;
    } else if (i >= 35) {
      EXPECT_EQ(f[i], base[i] / 8.0) << i;
    } else {
      EXPECT_LT(f[i], base[i]) << i;
      EXPECT_GT(f[i], base[i] / 8.0) << i;
    }
    if (i > 0) {
      EXPECT_LT(f[i], f[i - 1]) << i;
    }
  }
}

TEST(RopeScaling, ConfigSectionIsReadStrictlyAndValidated) {
  nlohmann::json j = {{"rope_type", "llama3"},
                      {"factor", 8.0},
                      {"low_freq_factor", 1.0},
                      {"high_freq_factor", 4.0},
                      {"original_max_position_embeddings", 8192}};
  const RopeScaling r = RopeScaling::from_config(ConfigSection(j, "model.rope_scaling"));
  EXPECT_EQ(r, RopeScaling::llama3(8.0, 1.0, 4.0, 8192));
  EXPECT_EQ(r.to_json(), j);
  nlohmann::json bad = j;
  bad["beta_fast"] = 32;
  test::expect_error_containing<ConfigError>(
      [&] { RopeScaling::from_config(ConfigSection(bad, "model.rope_scaling")); },
      "model.rope_scaling.beta_fast");
  bad = j;
  bad.erase("low_freq_factor");
  test::expect_error_containing<ConfigError>(
      [&] { RopeScaling::from_config(ConfigSection(bad, "model.rope_scaling")); }, "low_freq_factor");
  bad = {{"rope_type", "yarn"}, {"factor", 4.0}};
  test::expect_error_containing<ConfigError>(
      [&] { RopeScaling::from_config(ConfigSection(bad, "model.rope_scaling")); }, "default, linear, llama3");
  test::expect_error_containing<InvalidArgument>(
      [] { RopeScaling::llama3(8.0, 4.0, 4.0, 8192).validate(); },
      "high_freq_factor = 4 must be greater than low_freq_factor = 4");
  test::expect_error_containing<InvalidArgument>([] { RopeScaling::llama3(0.0, 1.0, 4.0, 8192).validate(); },
                                                 "model.rope_scaling.factor = 0 must be finite and > 0");
}

ModelConfig tiny_model() {
  ModelConfig c;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.vocab_size = 40;
  c.max_position_embeddings = 64;
  return c;
}

TEST(RopeScaling, ModelSectionKeepsTheScalingAndOmitsTheDefault) {
  ModelConfig c = tiny_model();
  EXPECT_FALSE(c.to_json().contains("rope_scaling"));  // resolved configs of default models stay as they were
  c.rope_scaling = RopeScaling::llama3(8.0, 1.0, 4.0, 16);
  const nlohmann::json j = c.to_json();
  EXPECT_EQ(ModelConfig::from_config(ConfigSection(j, "model")), c);
  nlohmann::json bad = j;
  bad["rope_scaling"]["high_freq_factor"] = 0.5;
  test::expect_error_containing<ConfigError>([&] { ModelConfig::from_config(ConfigSection(bad, "model")); },
                                             "config: model.rope_scaling.high_freq_factor = 0.5");
}

// The forward rotates with the config's frequencies: linear scaling of factor 1 is the default bit for bit,
// factor 2 changes the logits, and so does llama3 at positions where its frequencies differ.
TEST(RopeScaling, TheModelForwardUsesTheScaling) {
  const ContextPtr ctx = ops::make_context(Device::cpu());
  const auto logits = [&](const RopeScaling& scaling) {
    ModelConfig c = tiny_model();
    c.rope_scaling = scaling;
    Transformer m(c, ctx, DType::F32, false);
    m.init(7);
    std::vector<double> ids(24);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<double>((i * 7 + 3) % 40);
    return ops::to_double_vector(m.logits(ops::from_vector(ctx, {1, 24}, DType::I32, ids)));
  };
  const std::vector<double> plain = logits(RopeScaling{});
  EXPECT_EQ(logits(RopeScaling::linear(1.0)), plain);
  EXPECT_NE(logits(RopeScaling::linear(2.0)), plain);
  EXPECT_NE(logits(RopeScaling::llama3(4.0, 1.0, 4.0, 8)), plain);
}

}  // namespace
}  // namespace coat::models
