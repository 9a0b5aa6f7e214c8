// compute_gradients (behind coat-grads): the mean next-token cross-entropy's gradient matches central finite
// differences, and equals what the trainer's first step computes on the same windows; read_windows reads the
// trainer's windows; load_model builds the bf16 recipe's model.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "coat/io/checkpoint.h"
#include "coat/ops/copy.h"
#include "coat/ops/runtime.h"
#include "coat/train/gradients.h"
#include "coat/train/model_loader.h"
#include "coat/train/trainer.h"
#include "expect_error.h"

namespace coat::train {
namespace {

namespace fs = std::filesystem;

class GradientsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("coat_gradients_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // rows * seq + 1 random tokens: exactly `rows` windows of the trainer's sampler.
  fs::path write_tokens(int64_t rows, int64_t seq, uint32_t vocab) const {
    std::mt19937 rng(11);
    std::vector<uint32_t> tokens(static_cast<size_t>(rows * seq + 1));
    for (uint32_t& t : tokens) t = rng() % vocab;
    const fs::path path = dir_ / "tokens.bin";
    data::write_token_file(path, tokens, data::TokenWidth::U16, vocab);
    return path;
  }

  ContextPtr ctx_ = ops::make_context(Device::cpu());
  fs::path dir_;
};

models::ModelConfig tiny(models::Architecture arch, bool tie) {
  models::ModelConfig c;
  c.architecture = arch;
  c.hidden_size = 8;
  c.intermediate_size = 12;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.num_key_value_heads = arch == models::Architecture::Llama ? 1 : 2;
  c.vocab_size = 13;
  c.max_position_embeddings = 16;
  c.tie_word_embeddings = tie;
  c.initializer_range = 0.5;
  return c;
}

TEST_F(GradientsTest, ReadWindowsTakesTheTrainersWindows) {
  const fs::path path = write_tokens(3, 4, 13);
  const data::TokenFile f = data::TokenFile::open(path);
  const TokenBatch b = read_windows(f, 1, 2, 4, 13, ctx_);
  ASSERT_EQ(b.ids.shape(), (Shape{2, 4}));
  const std::vector<double> ids = ops::to_double_vector(b.ids), targets = ops::to_double_vector(b.targets);
  for (int64_t r = 0; r < 2; ++r) {
    for (int64_t t = 0; t < 4; ++t) {
      EXPECT_EQ(ids[static_cast<size_t>(r * 4 + t)], f[static_cast<uint64_t>((1 + r) * 4 + t)]);
      EXPECT_EQ(targets[static_cast<size_t>(r * 4 + t)], f[static_cast<uint64_t>((1 + r) * 4 + t + 1)]);
    }
  }
  test::expect_error_containing([&] { read_windows(f, 1, 3, 4, 13, ctx_); }, "need 17");
}

// d(mean CE)/d(w) against central differences in F64 on a few elements of every parameter.
void check_against_finite_differences(const models::ModelConfig& config, const TokenBatch& batch,
                                      const ContextPtr& ctx) {
  models::Transformer model(config, ctx, DType::F64, /*with_grads=*/true);
  model.init(5);
  const GradientResult r = compute_gradients(model, batch);
  EXPECT_EQ(r.tokens, batch.targets.numel());
  auto loss = [&] {
    autograd::Tape t(/*grad_enabled=*/false);
    const nn::LossOutput out = model.forward(t, batch.ids, batch.targets, -1, 1.0);
    return out.read().loss_sum / static_cast<double>(out.read().count);
  };
  EXPECT_NEAR(loss(), r.loss, 1e-12 * std::abs(r.loss));
  constexpr double kStep = 1e-6;
  for (nn::Parameter& p : model.parameters()) {
    const std::vector<double> g = ops::to_double_vector(p.grad);
    double* x = p.master.data<double>();  // F64: the master is what the forward computes with
    for (int64_t i : {int64_t{0}, p.master.numel() / 2, p.master.numel() - 1}) {
      const double keep = x[i];
      x[i] = keep + kStep;
      const double up = loss();
      x[i] = keep - kStep;
      const double down = loss();
      x[i] = keep;
      const double numeric = (up - down) / (2 * kStep);
      EXPECT_NEAR(g[static_cast<size_t>(i)], numeric, 1e-6 * (1 + std::abs(numeric)))
          << p.name << " element " << i;
    }
  }
}

TEST_F(GradientsTest, MeanCrossEntropyGradientMatchesFiniteDifferences) {
  const fs::path path = write_tokens(3, 6, 13);
  const TokenBatch batch = read_windows(data::TokenFile::open(path), 0, 3, 6, 13, ctx_);
  check_against_finite_differences(tiny(models::Architecture::Llama, false), batch, ctx_);
  check_against_finite_differences(tiny(models::Architecture::Olmo, true), batch, ctx_);
}

TEST_F(GradientsTest, EqualsTheTrainersFirstStep) {
  // A token file of exactly one batch of windows, no validation split: the trainer's first step takes every
  // window (in its sampler's order), so its loss and gradients are compute_gradients' on rows 0..3.
  const int64_t rows = 4, seq = 16;
  const fs::path path = write_tokens(rows, seq, 64);
  std::ifstream in(std::string(COAT_SOURCE_DIR) + "/configs/test_small.json");
  nlohmann::json c = nlohmann::json::parse(in);
  c["data"]["path"] = path.string();
  c["data"]["validation_fraction"] = 0.0;
  c["train"]["micro_batch_size"] = rows;
  c["train"]["global_batch_size"] = rows;
  c["logging"]["run_dir"] = (dir_ / "run").string();
  c["logging"]["progress"] = "off";
  Trainer trainer(parse_train_config(c, "t.json"), ctx_);
  models::Transformer reference(trainer.model().config(), ctx_, DType::F32, /*with_grads=*/true);
  for (size_t i = 0; i < reference.parameters().size(); ++i) {
    ops::copy_(reference.parameters()[i].master, trainer.model().parameters()[i].master);
  }
  const StepRecord step = trainer.train_step();  // leaves its gradients in place after the update
  const GradientResult r =
      compute_gradients(reference, read_windows(data::TokenFile::open(path), 0, rows, seq, 64, ctx_));
  EXPECT_NEAR(r.loss, step.loss, 1e-6 * step.loss);
  double total = 0;
  for (size_t i = 0; i < reference.parameters().size(); ++i) {
    const std::vector<double> a = ops::to_double_vector(reference.parameters()[i].grad);
    const std::vector<double> b = ops::to_double_vector(trainer.model().parameters()[i].grad);
    double diff = 0, norm = 0;
    for (size_t k = 0; k < a.size(); ++k) {
      diff += (a[k] - b[k]) * (a[k] - b[k]);
      norm += b[k] * b[k];
      total += a[k] * a[k];
    }
    EXPECT_GT(norm, 0.0) << reference.parameters()[i].name;
    // The rows come in the sampler's order, so sums over rows round differently: not bit-identical.
    EXPECT_LE(std::sqrt(diff), 1e-5 * std::sqrt(norm)) << reference.parameters()[i].name;
  }
  EXPECT_NEAR(std::sqrt(total), step.grad_norm, 1e-5 * step.grad_norm);
}

TEST_F(GradientsTest, LoadModelBuildsTheBf16Recipe) {
  models::ModelConfig config = tiny(models::Architecture::Llama, false);
  models::Transformer source(config, ctx_, DType::F32, /*with_grads=*/false);
  source.init(3);
  nlohmann::json meta;
  meta["config"] = {{"model", config.to_json()}};
  meta["weights_only"] = true;
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const nn::Parameter& p : source.parameters()) tensors.emplace_back(p.name, p.master);
  io::save_checkpoint(dir_ / "ck", 0, meta, tensors, 0);

  LoadedModel loaded = load_model(dir_ / "ck", ctx_, /*with_grads=*/true, DType::BF16);
  ASSERT_EQ(loaded.model->parameters().size(), source.parameters().size());
  for (size_t i = 0; i < source.parameters().size(); ++i) {
    const nn::Parameter& p = loaded.model->parameters()[i];
    EXPECT_EQ(p.master.dtype(), DType::F32);
    EXPECT_EQ(p.value.dtype(), DType::BF16);
    EXPECT_EQ(p.grad.dtype(), DType::F32);
    EXPECT_EQ(ops::to_double_vector(p.master), ops::to_double_vector(source.parameters()[i].master))
        << p.name;
    const Tensor rounded = ops::cast(p.master, DType::BF16);
    EXPECT_EQ(std::memcmp(rounded.data_ptr(), ops::contiguous(p.value).data_ptr(), p.value.nbytes()), 0)
        << p.name;
  }
  // Without options: the F32 model without gradients, as before.
  LoadedModel plain = load_model(dir_ / "ck", ctx_);
  EXPECT_EQ(plain.model->parameters()[0].value.dtype(), DType::F32);
  EXPECT_FALSE(plain.model->parameters()[0].grad.defined());
}

}  // namespace
}  // namespace coat::train
