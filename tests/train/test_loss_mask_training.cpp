// Supervised fine-tuning through data.loss_mask: the loss is the mean over the targets the mask counts (in the
// training step across micro-batches, and in the evaluation), masked targets move neither the loss nor a
// gradient, a step without counted targets is skipped, and checkpoints carry the mask: a resume is
// bit-identical, and one under another mask (or with one added or removed) is refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "coat/data/loss_mask_file.h"
#include "coat/data/token_file.h"
#include "coat/data/window_sampler.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/runtime.h"
#include "coat/train/gradients.h"
#include "coat/train/resume.h"
#include "coat/train/trainer.h"
#include "expect_error.h"

namespace coat::train {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kSeq = 16;     // configs/test_small.json's data.seq_len
constexpr uint32_t kVocab = 64;  // and model.vocab_size

class LossMaskTraining : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("coat_loss_mask_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  /// `windows` windows of the sampler (windows * seq + 1 tokens) of a learnable stream, written to `name`.
  std::vector<uint32_t> write_tokens(const std::string& name, int64_t windows) const {
    std::mt19937 rng(5);
    std::vector<uint32_t> tokens(static_cast<size_t>(windows * kSeq + 1));
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = (rng() % 4 == 0) ? rng() % kVocab : (i * 7) % kVocab;
    data::write_token_file(dir_ / name, tokens, data::TokenWidth::U16, kVocab);
    return tokens;
  }
  /// A mask as the SFT packing makes it: each row's first token 0 (the start of an example), the others 1
  /// with probability 2/3, so that the micro-batches count different numbers of targets.
  static std::vector<uint8_t> sft_mask(size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::vector<uint8_t> m(n);
    for (size_t i = 0; i < n; ++i) m[i] = i % kSeq == 0 ? 0 : static_cast<uint8_t>(rng() % 3 != 0);
    return m;
  }
  fs::path write_mask(const std::string& name, const std::vector<uint8_t>& mask) const {
    data::write_loss_mask_file(dir_ / name, mask);
    return dir_ / name;
  }

  /// configs/test_small.json over token file `tokens` in run directory `run`.
  TrainConfig config(const std::string& run, const std::string& tokens,
                     const std::function<void(nlohmann::json&)>& set = {}) const {
    std::ifstream in(std::string(COAT_SOURCE_DIR) + "/configs/test_small.json");
    nlohmann::json c = nlohmann::json::parse(in);
    c["data"]["path"] = (dir_ / tokens).string();
    c["logging"]["run_dir"] = (dir_ / run).string();
    c["logging"]["progress"] = "off";
    c["checkpoint"]["keep_last"] = 0;
    if (set) set(c);
    return parse_train_config(c, "c.json");
  }

  /// The mean cross-entropy over the targets of `windows` that `mask` counts, from the model's logits in
  /// double on the host (nothing of the trainer's batch building or of the loss op), and the targets counted.
  static std::pair<double, int64_t> direct_mean_loss(models::Transformer& model, const std::vector<uint32_t>& tokens,
                                                     const std::vector<uint8_t>& mask,
                                                     const std::vector<uint64_t>& windows, const ContextPtr& ctx) {
    double sum = 0.0;
    int64_t counted = 0;
    for (uint64_t w : windows) {
      const uint64_t start = w * kSeq;
      std::vector<double> ids(tokens.begin() + static_cast<std::ptrdiff_t>(start),
                              tokens.begin() + static_cast<std::ptrdiff_t>(start + kSeq));
      const std::vector<double> logits =
          ops::to_double_vector(model.logits(ops::from_vector(ctx, {1, kSeq}, DType::I32, ids)));
      for (int64_t t = 0; t < kSeq; ++t) {
        const uint64_t target = start + static_cast<uint64_t>(t) + 1;
        if (mask[target] == 0) continue;
        const double* row = logits.data() + t * kVocab;
        const double top = *std::max_element(row, row + kVocab);
        double z = 0.0;
        for (uint32_t v = 0; v < kVocab; ++v) z += std::exp(row[v] - top);
        sum += top + std::log(z) - row[tokens[target]];
        ++counted;
      }
    }
    return {sum / static_cast<double>(counted), counted};
  }

  static std::vector<std::vector<double>> gradients(Trainer& t) {
    std::vector<std::vector<double>> out;
    for (const nn::Parameter& p : t.model().parameters()) out.push_back(ops::to_double_vector(p.grad));
    return out;
  }
  static std::vector<std::vector<double>> masters(Trainer& t) {
    std::vector<std::vector<double>> out;
    for (const nn::Parameter& p : t.model().parameters()) out.push_back(ops::to_double_vector(p.master));
    return out;
  }

  ContextPtr ctx_ = ops::make_context(Device::cpu());
  fs::path dir_;
};

// One step over every window in two micro-batches: the loss is the mean over the counted targets of the whole
// global batch (not of each micro-batch), and the gradients are those of that mean.
TEST_F(LossMaskTraining, TheStepLossIsTheMeanOverCountedTargetsAndItsGradient) {
  const int64_t rows = 4;
  const std::vector<uint32_t> tokens = write_tokens("tokens.bin", rows);
  const std::vector<uint8_t> mask = sft_mask(tokens.size(), 7);
  write_mask("tokens.bin.mask", mask);
  Trainer trainer(config("run", "tokens.bin",
                         [&](nlohmann::json& c) {
                           c["data"]["loss_mask"] = (dir_ / "tokens.bin.mask").string();
                           c["data"]["validation_fraction"] = 0.0;
                           c["train"]["micro_batch_size"] = 2;
                           c["train"]["global_batch_size"] = rows;
                         }),
                  ctx_);
  models::Transformer reference(trainer.model().config(), ctx_, DType::F32, /*with_grads=*/true);
  for (size_t i = 0; i < reference.parameters().size(); ++i) {
    ops::copy_(reference.parameters()[i].master, trainer.model().parameters()[i].master);
  }
  data::WindowSampler sampler(tokens.size(), kSeq, trainer.config().data.seed, 0.0);
  const auto [expected_loss, counted] = direct_mean_loss(reference, tokens, mask, sampler.next(rows), ctx_);
  ASSERT_LT(counted, rows * kSeq);  // the mask leaves some targets out

  const StepRecord step = trainer.train_step();  // leaves its gradients in place after the update
  EXPECT_EQ(step.loss_tokens, counted);
  EXPECT_NEAR(step.loss, expected_loss, 1e-6 * expected_loss);

  // The gradient of the same mean, from one forward over rows 0..3 with the masked targets set to -1 by hand.
  TokenBatch batch = read_windows(data::TokenFile::open(dir_ / "tokens.bin"), 0, rows, kSeq, kVocab, ctx_);
  std::vector<double> targets = ops::to_double_vector(batch.targets);
  for (int64_t i = 0; i < rows * kSeq; ++i) {
    if (mask[static_cast<size_t>(i + 1)] == 0) targets[static_cast<size_t>(i)] = -1;  // row r's target t: token r*seq+t+1
  }
  batch.targets = ops::from_vector(ctx_, {rows, kSeq}, DType::I32, targets);
  const GradientResult r = compute_gradients(reference, batch);
  EXPECT_EQ(r.tokens, counted);
  // compute_gradients scales by 1 / (all targets); the trainer's mean is over the counted ones.
  const double rescale = static_cast<double>(rows * kSeq) / static_cast<double>(counted);
  double total = 0.0;
  for (size_t i = 0; i < reference.parameters().size(); ++i) {
    const std::vector<double> a = ops::to_double_vector(reference.parameters()[i].grad);
    const std::vector<double> b = ops::to_double_vector(trainer.model().parameters()[i].grad);
    double diff = 0.0, norm = 0.0;
    for (size_t k = 0; k < a.size(); ++k) {
      diff += (a[k] * rescale - b[k]) * (a[k] * rescale - b[k]);
      norm += b[k] * b[k];
      total += b[k] * b[k];
    }
    EXPECT_GT(norm, 0.0) << reference.parameters()[i].name;
    // The rows come in the sampler's order, so sums over rows round differently: not bit-identical.
    EXPECT_LE(std::sqrt(diff), 1e-5 * std::sqrt(norm)) << reference.parameters()[i].name;
  }
  EXPECT_NEAR(std::sqrt(total), step.grad_norm, 1e-5 * step.grad_norm);
}

// Two token files that differ only in tokens that are targets of the step's windows and never their inputs
// (each ends a training window and starts a validation window), with mask 0 there: the step's loss and every
// gradient are the same bits. Without the mask the same change moves the loss.
TEST_F(LossMaskTraining, MaskedTargetsMoveNeitherTheLossNorAGradient) {
  // 20 windows, validation_fraction 0.1: windows 9 and 19 validate; tokens 144 and 304 end training windows 8
  // and 18 and start the validation windows. One step of 18 windows takes every training window.
  std::vector<uint32_t> tokens = write_tokens("a.bin", 20);
  for (const size_t p : {size_t{144}, size_t{304}}) tokens[p] = (tokens[p] + 17) % kVocab;
  data::write_token_file(dir_ / "b.bin", tokens, data::TokenWidth::U16, kVocab);
  std::vector<uint8_t> mask = sft_mask(tokens.size(), 3);
  ASSERT_EQ(mask[144] + mask[304], 0);
  write_mask("mask", mask);
  const auto run = [&](const std::string& file, bool masked) {
    Trainer t(config(file + (masked ? "_masked" : "_plain"), file,
                     [&](nlohmann::json& c) {
                       if (masked) c["data"]["loss_mask"] = (dir_ / "mask").string();
                       c["train"]["micro_batch_size"] = 3;
                       c["train"]["global_batch_size"] = 18;
                     }),
              ctx_);
    const StepRecord step = t.train_step();
    return std::make_pair(step, gradients(t));
  };
  const auto [a, grads_a] = run("a.bin", true);
  const auto [b, grads_b] = run("b.bin", true);
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_EQ(a.loss_tokens, b.loss_tokens);
  EXPECT_EQ(a.grad_norm, b.grad_norm);
  EXPECT_EQ(grads_a, grads_b);
  EXPECT_NE(run("a.bin", false).first.loss, run("b.bin", false).first.loss)
      << "the changed tokens must be targets of the step";
}

// A global batch without one counted target is skipped with nothing updated; the next step trains, and
// metrics.jsonl says how many targets each step counted.
TEST_F(LossMaskTraining, AStepWithoutCountedTargetsIsSkipped) {
  const std::vector<uint32_t> tokens = write_tokens("tokens.bin", 40);
  std::vector<uint8_t> mask = sft_mask(tokens.size(), 5);
  const TrainConfig c = config("run", "tokens.bin", [&](nlohmann::json& j) {
    j["data"]["loss_mask"] = (dir_ / "tokens.bin.mask").string();
    j["train"]["max_steps"] = 2;
    j["train"]["eval_interval"] = 0;
  });
  data::WindowSampler sampler(tokens.size(), kSeq, c.data.seed, c.data.validation_fraction);
  for (uint64_t w : sampler.next(static_cast<uint64_t>(c.train.global_batch_size))) {
    std::fill_n(mask.begin() + static_cast<std::ptrdiff_t>(w * kSeq + 1), kSeq, uint8_t{0});  // step 1's targets
  }
  int64_t second_step_targets = 0;
  for (uint64_t w : sampler.next(static_cast<uint64_t>(c.train.global_batch_size))) {
    second_step_targets += std::count(mask.begin() + static_cast<std::ptrdiff_t>(w * kSeq + 1),
                                      mask.begin() + static_cast<std::ptrdiff_t>(w * kSeq + kSeq + 1), 1);
  }
  ASSERT_GT(second_step_targets, 0);
  write_mask("tokens.bin.mask", mask);

  Trainer t(c, ctx_);
  const auto before = masters(t);
  const StepRecord first = t.train_step();
  EXPECT_TRUE(first.skipped);
  EXPECT_TRUE(std::isnan(first.loss));
  EXPECT_EQ(first.loss_tokens, 0);
  EXPECT_EQ(t.step(), 1);
  EXPECT_EQ(t.optimizer().step_count(), 0);
  EXPECT_EQ(masters(t), before);

  Trainer trained(c, ctx_);
  trained.run();
  ASSERT_EQ(trained.history().size(), 2u);
  EXPECT_FALSE(trained.history()[1].skipped);
  EXPECT_NE(masters(trained), before);
  std::ifstream in(dir_ / "run" / "metrics.jsonl");
  std::vector<nlohmann::json> steps;
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("loss")) steps.push_back(j);
  }
  ASSERT_EQ(steps.size(), 2u);
  EXPECT_TRUE(steps[0]["loss"].is_null());
  EXPECT_EQ(steps[0]["loss_tokens"], 0);
  EXPECT_EQ(steps[0]["skipped"], true);
  EXPECT_EQ(steps[1]["loss_tokens"], second_step_targets);
  EXPECT_EQ(steps[1]["loss"].get<double>(), trained.history()[1].loss);
}

// The validation loss is the mean over the counted validation targets (every validation window here).
TEST_F(LossMaskTraining, TheValidationLossIsTheMeanOverCountedTargets) {
  const std::vector<uint32_t> tokens = write_tokens("tokens.bin", 40);
  const std::vector<uint8_t> mask = sft_mask(tokens.size(), 11);
  write_mask("tokens.bin.mask", mask);
  Trainer t(config("run", "tokens.bin",
                   [&](nlohmann::json& c) {
                     c["data"]["loss_mask"] = (dir_ / "tokens.bin.mask").string();
                     c["train"]["eval_batches"] = 0;  // the whole split
                   }),
            ctx_);
  data::WindowSampler sampler(tokens.size(), kSeq, t.config().data.seed, t.config().data.validation_fraction);
  std::vector<uint64_t> windows;
  for (uint64_t i = 0; i < sampler.validation_windows(); ++i) windows.push_back(sampler.validation_window(i));
  ASSERT_EQ(windows.size(), 4u);
  const auto [expected, counted] = direct_mean_loss(t.model(), tokens, mask, windows, ctx_);
  const EvalResult e = t.evaluate();
  EXPECT_EQ(e.tokens, counted);
  EXPECT_LT(counted, static_cast<int64_t>(windows.size()) * kSeq);
  EXPECT_NEAR(e.loss, expected, 1e-6 * expected);
}

// The config names data.loss_mask when its file is missing or goes with another token file, and the resolved
// document (config.json, checkpoints) holds it.
TEST_F(LossMaskTraining, TheConfigKeyIsParsedResolvedAndCheckedAgainstTheTokenFile) {
  const std::vector<uint32_t> tokens = write_tokens("tokens.bin", 40);
  const TrainConfig plain = config("plain", "tokens.bin");
  EXPECT_EQ(plain.data.loss_mask, "");
  EXPECT_EQ(plain.resolved.at("data").at("loss_mask"), "");
  const std::string path = (dir_ / "missing.mask").string();
  const TrainConfig missing = config("missing", "tokens.bin", [&](nlohmann::json& c) { c["data"]["loss_mask"] = path; });
  EXPECT_EQ(missing.resolved.at("data").at("loss_mask"), path);
  EXPECT_EQ(parse_train_config(missing.resolved, "again.json").data.loss_mask, path);
  test::expect_error_containing<ConfigError>([&] { Trainer t(missing, ctx_); },
                                             "config: 'data.loss_mask': loss-mask file \"" + path + "\": cannot open");
  write_mask("short.mask", std::vector<uint8_t>(tokens.size() - 1, 1));
  test::expect_error_containing<ConfigError>(
      [&] {
        Trainer t(config("short", "tokens.bin",
                         [&](nlohmann::json& c) { c["data"]["loss_mask"] = (dir_ / "short.mask").string(); }),
                  ctx_);
      },
      "short.mask\" has 640 entries but token file");
  test::expect_error_containing<ConfigError>(
      [&] { config("typo", "tokens.bin", [&](nlohmann::json& c) { c["data"]["loss_maks"] = path; }); },
      "data.loss_mask");
}

class LossMaskResume : public LossMaskTraining {
 protected:
  void SetUp() override {
    LossMaskTraining::SetUp();
    tokens_ = write_tokens("tokens.bin", 250);
    write_mask("tokens.bin.mask", sft_mask(tokens_.size(), 13));
  }
  /// 6 steps, checkpoints every 3, under the mask at `mask` ("" for none).
  TrainConfig masked(const std::string& run, const std::string& mask) const {
    return config(run, "tokens.bin", [&](nlohmann::json& c) {
      if (!mask.empty()) c["data"]["loss_mask"] = (dir_ / mask).string();
    });
  }
  /// Runs `run` to step 3 (its checkpoint) under `mask`.
  void first_half(const std::string& run, const std::string& mask) {
    Trainer first(masked(run, mask), ctx_);
    first.run(/*stop_after_step=*/3);
    ASSERT_EQ(first.step(), 3);
  }
  static std::vector<double> losses(const Trainer& t) {
    std::vector<double> out;
    for (const StepRecord& r : t.history()) out.push_back(r.loss);
    return out;
  }
  std::vector<uint32_t> tokens_;
};

TEST_F(LossMaskResume, ResumeIsBitIdentical) {
  Trainer full(masked("full", "tokens.bin.mask"), ctx_);
  full.run();
  first_half("split", "tokens.bin.mask");
  // The same mask at another path resumes (the checkpoint knows it by its entries).
  fs::copy_file(dir_ / "tokens.bin.mask", dir_ / "moved.mask");
  Trainer second(masked("split", "moved.mask"), ctx_, /*resuming=*/true);
  const std::optional<fs::path> from =
      choose_resume_checkpoint("auto", masked("split", "moved.mask"), nullptr, ctx_);
  ASSERT_TRUE(from.has_value());
  second.load_checkpoint(*from);
  second.run();
  const std::vector<double> all = losses(full);
  EXPECT_EQ(losses(second), std::vector<double>(all.begin() + 3, all.end()));
  for (const StepRecord& r : full.history()) EXPECT_LT(r.loss_tokens, 4 * kSeq);
  EXPECT_EQ(masters(full), masters(second));
}

TEST_F(LossMaskResume, AnotherMaskOrNoneIsRefused) {
  first_half("masked", "tokens.bin.mask");
  first_half("plain", "");
  // Another mask: refused by its entries, naming both files.
  std::vector<uint8_t> other = sft_mask(tokens_.size(), 14);
  write_mask("other.mask", other);
  {
    Trainer t(masked("masked", "other.mask"), ctx_, /*resuming=*/true);
    test::expect_error_containing<ConfigError>([&] { t.load_checkpoint(*t.latest_checkpoint()); },
                                               "tokens.bin.mask' (" + std::to_string(tokens_.size()) + " entries");
    test::expect_error_containing<ConfigError>([&] { t.load_checkpoint(*t.latest_checkpoint()); },
                                               "but 'data.loss_mask' is '" + (dir_ / "other.mask").string());
  }
  // The mask removed, or added: refused when the checkpoint is chosen (from the configs) and when loaded.
  test::expect_error_containing<ConfigError>([&] { choose_resume_checkpoint("auto", masked("masked", ""), nullptr, ctx_); },
                                             "was trained with 'data.loss_mask' = '" +
                                                 (dir_ / "tokens.bin.mask").string() + "' but this config sets none");
  test::expect_error_containing<ConfigError>(
      [&] { choose_resume_checkpoint("auto", masked("plain", "tokens.bin.mask"), nullptr, ctx_); },
      "was trained without a loss mask (every target counted) but this config sets 'data.loss_mask'");
  Trainer added(masked("plain", "tokens.bin.mask"), ctx_, /*resuming=*/true);
  test::expect_error_containing<ConfigError>([&] { added.load_checkpoint(*added.latest_checkpoint()); },
                                             "train.init_from=" + (dir_ / "plain").string());
}

}  // namespace
}  // namespace coat::train
