// train.init_from without a model section: the run takes the checkpoint's model (its meta.json config.model),
// starts from its weights, and a config whose init_from cannot be read says which key and path.
#include <gtest/gtest.h>

#include "coat/ops/runtime.h"
#include "coat/train/trainer.h"
#include "expect_error.h"
#include "small_run_test.h"

namespace coat::train {
namespace {

class InitFromModelTest : public SmallRunTest {
 protected:
  ContextPtr ctx_ = ops::make_context(Device::cpu());
};

TEST_F(InitFromModelTest, AConfigWithoutAModelTakesTheCheckpointsModel) {
  nlohmann::json base = small_config("base");
  base["model"]["hidden_size"] = 48;  // not the shape any default would give
  base["model"]["num_hidden_layers"] = 3;
  base["train"]["max_steps"] = 2;
  {
    Trainer pre(parse_train_config(base, "base.json"), ctx_);
    pre.run();
  }
  nlohmann::json ft = small_config("ft");
  ft.erase("model");
  ft["train"]["init_from"] = (dir_ / "base").string();
  ft["train"]["max_steps"] = 2;
  const std::string text = ft.dump();
  const TrainConfig c = parse_train_config_text(text, {}, "ft.json");
  EXPECT_EQ(c.model.to_json(), parse_train_config(base, "base.json").model.to_json());
  EXPECT_EQ(c.resolved.at("model").at("hidden_size"), 48);
  // The run starts from the pretrained weights (the trainer checks the model against init_from's too).
  Trainer t(c, ctx_);
  t.run();
  EXPECT_EQ(t.step(), 2);
  // --set model.x makes a model section of its own, which must then be complete: the checkpoint's is taken
  // only where the config has none at all.
  test::expect_error_containing<ConfigError>(
      [&] { (void)parse_train_config_text(text, {"model.hidden_size=48"}, "ft.json"); }, "model");
}

TEST_F(InitFromModelTest, AnUnreadableInitFromNamesTheKeyAndThePath) {
  nlohmann::json ft = small_config("ft");
  ft.erase("model");
  ft["train"]["init_from"] = (dir_ / "nowhere").string();
  test::expect_error_containing<ConfigError>(
      [&] { (void)parse_train_config_text(ft.dump(), {}, "ft.json"); },
      "ft.json: no 'model' section, and the model of 'train.init_from' = '" + (dir_ / "nowhere").string() +
          "' could not be read: checkpoint path");
  // Without init_from a missing model section is the parser's own error.
  ft["train"].erase("init_from");
  test::expect_error_containing<ConfigError>([&] { (void)parse_train_config_text(ft.dump(), {}, "ft.json"); },
                                             "model");
}

}  // namespace
}  // namespace coat::train
