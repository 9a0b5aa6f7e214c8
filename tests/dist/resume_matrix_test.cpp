// Resuming on another world size (issue 14): runs of N ranks (the job's first N) save at step 3 and go on to
// step 6; runs of M ranks resume that checkpoint (chosen by --resume auto's collective choice) and train
// steps 4-6, for every N and M in 1..4, Llama and OLMo, FP32 and fp8_expand states. Same world size: the
// losses and the step-6 checkpoint (masters and states, every byte) equal the uninterrupted run's. Another
// world size:
//  - every re-slice is exact: M ranks that load N's step-3 checkpoint and save it again write the same bytes
//    (one process's layout) as N did;
//  - FP32 states: losses within 1e-5 relative of the uninterrupted N-rank run, on the same windows;
//  - fp8_expand states: the first step after the resume within 1e-5 (the same weights and states, only the
//  sum
//    of the loss over ranks in another order); the later ones within twice the widest difference between the
//    uninterrupted runs of different world sizes (each world size sums gradients in another order, and FP8
//    moments turn a last-bit difference into a code step: the bound of the sharded FP8 tests,
//    sharded_training_test.cpp, drawn here from the runs at hand), or 1e-5 where that is larger.
// Runs in the np 4 job only (it covers every smaller world); ranks outside a sub-run wait without spinning.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <string>

#include "coat/io/checkpoint.h"
#include "coat/io/checkpoint_reader.h"
#include "coat/train/resume.h"
#include "coat/train/trainer.h"
#include "dist_test_world.h"
#include "training_job.h"

namespace coat::train {
namespace {

namespace fs = std::filesystem;

constexpr int kMatrixWorld = 4;

struct MatrixCase {
  const char* architecture;
  const char* states;
};

std::string case_name(const ::testing::TestParamInfo<MatrixCase>& info) {
  return std::string(info.param.architecture) + "_" + info.param.states;
}

std::vector<double> losses(const Trainer& t) {
  std::vector<double> out;
  for (const StepRecord& r : t.history()) out.push_back(r.loss);
  return out;
}

double worst_difference(const std::vector<double>& a, const std::vector<double>& b, size_t from = 0) {
  double worst = 0.0;
  for (size_t i = from; i < std::min(a.size(), b.size()); ++i)
    worst = std::max(worst, std::abs(a[i] - b[i]) / std::abs(a[i]));
  return worst;
}

/// The first difference between two checkpoints in one process's layout (every tensor, every byte), or "".
std::string first_difference(const fs::path& a_dir, const fs::path& b_dir) {
  const io::CheckpointReader a = io::CheckpointReader::open(a_dir), b = io::CheckpointReader::open(b_dir);
  if (a.tensors().size() != b.tensors().size()) return "the tensor counts differ";
  for (const io::CheckpointTensorInfo& info : a.tensors()) {
    if (!b.contains(info.name)) return "'" + info.name + "' is missing";
    const Tensor x = a.read(info.name), y = b.read(info.name);
    if (x.shape() != y.shape() || x.dtype() != y.dtype() ||
        std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()) != 0) {
      return "'" + info.name + "' differs";
    }
  }
  return "";
}

class ResumeMatrix : public TrainingJob, public ::testing::WithParamInterface<MatrixCase> {};

TEST_P(ResumeMatrix, AnyWorldSizeResumesAnother) {
  if (test::world().world_size() != kMatrixWorld)
    GTEST_SKIP() << "the matrix runs in the np " << kMatrixWorld << " job";
  const auto set = [&](nlohmann::json& c) {
    c["model"]["architecture"] = GetParam().architecture;
    c["model"]["tie_word_embeddings"] = std::string(GetParam().architecture) == "olmo";
    c["optim"]["state_dtype"] = GetParam().states;
  };
  const bool fp32 = std::string(GetParam().states) == "fp32";
  const bool root = test::world().rank() == 0;  // in every sub-run: it holds every result
  std::map<int, std::vector<double>> full;
  for (int n = 1; n <= kMatrixWorld; ++n) {
    on_first_ranks(n, [&](dist::Communicator& comm) {
      Trainer t(config(dir_ / ("full" + std::to_string(n)), set, n), ctx_, false, &comm);
      t.run();
      full[n] = losses(t);
    });
  }
  double spread = 0.0;  // between world sizes, uninterrupted
  for (const auto& [a, la] : full)
    for (const auto& [b, lb] : full) spread = std::max(spread, worst_difference(la, lb));
  const double bound = fp32 ? 1e-5 : std::max(1e-5, 2.0 * spread);
  if (root)
    std::printf("%s/%s: world sizes 1-4 differ by %.3g uninterrupted; bound %.3g\n", GetParam().architecture,
                GetParam().states, spread, bound);

  for (int n = 1; n <= kMatrixWorld; ++n) {
    for (int m = 1; m <= kMatrixWorld; ++m) {
      const std::string pair = std::to_string(n) + "to" + std::to_string(m);
      const fs::path run = dir_ / ("resume" + pair);
      copy_checkpoint(dir_ / ("full" + std::to_string(n)), 3, run);
      std::vector<double> resumed;
      on_first_ranks(m, [&](dist::Communicator& comm) {
        const TrainConfig c = config(run, set, m);
        const std::optional<fs::path> from = choose_resume_checkpoint("auto", c, &comm, ctx_);
        ASSERT_TRUE(from.has_value());
        Trainer t(c, ctx_, /*resuming=*/true, &comm);
        t.load_checkpoint(*from);
        t.run();
        resumed = losses(t);
      });
      if (!root) continue;
      const std::vector<double> expected(full[n].begin() + 3, full[n].end());
      ASSERT_EQ(resumed.size(), 3u) << pair;
      if (n == m) {
        EXPECT_EQ(resumed, expected) << pair << ": the same world size must continue bit-identically";
        EXPECT_EQ(first_difference(checkpoint(dir_ / ("full" + std::to_string(n)), 6), checkpoint(run, 6)),
                  "")
            << pair;
        continue;
      }
      const double worst = worst_difference(expected, resumed);
      std::printf("%s/%s %d -> %d ranks: worst relative loss difference %.3g\n", GetParam().architecture,
                  GetParam().states, n, m, worst);
      EXPECT_NEAR(resumed[0], expected[0], 1e-5 * std::abs(expected[0]))
          << pair << ": the first step after the resume";
      for (size_t i = 1; i < 3; ++i)
        EXPECT_NEAR(resumed[i], expected[i], bound * std::abs(expected[i])) << pair << " step " << 4 + i;
    }
  }
  // Every re-slice is exact: M ranks load N's step 3 and write it again, byte for byte.
  for (int n = 1; n <= kMatrixWorld; ++n) {
    for (int m = 1; m <= kMatrixWorld; ++m) {
      if (n == m) continue;
      const fs::path run = dir_ / ("reslice" + std::to_string(n) + "to" + std::to_string(m));
      on_first_ranks(m, [&](dist::Communicator& comm) {
        Trainer t(config(run, set, m), ctx_, false, &comm);
        t.load_checkpoint(checkpoint(dir_ / ("full" + std::to_string(n)), 3));
        t.save_checkpoint();
      });
      if (root) {
        EXPECT_EQ(first_difference(checkpoint(dir_ / ("full" + std::to_string(n)), 3), checkpoint(run, 3)),
                  "")
            << n << " -> " << m << " ranks";
        EXPECT_EQ(io::CheckpointReader::open(checkpoint(run, 3)).file_count(), m);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, ResumeMatrix,
                         ::testing::Values(MatrixCase{"llama", "fp32"}, MatrixCase{"llama", "fp8_expand"},
                                           MatrixCase{"olmo", "fp32"}, MatrixCase{"olmo", "fp8_expand"}),
                         case_name);

// Every recipe and state storage resumes bit-identically on the world it was saved on (the losses and every byte
// of the step-6 checkpoint), sharded over all the job's ranks (one process: tests/train/test_trainer.cpp).
struct RecipeCase {
  const char* recipe;
  const char* states;
};

class SameWorldResume : public TrainingJob, public ::testing::WithParamInterface<RecipeCase> {};

TEST_P(SameWorldResume, ContinuesBitIdentically) {
  const int world = test::world().world_size();
  if (world < 2) GTEST_SKIP() << "one process: tests/train/test_trainer.cpp";
  const auto set = [&](nlohmann::json& c) {
    c["precision"]["recipe"] = GetParam().recipe;
    c["optim"]["state_dtype"] = GetParam().states;
  };
  auto comm = dist::make_communicator(test::world(), Device::cpu());
  std::vector<double> full;
  {
    Trainer t(config(dir_ / "full", set, world), ctx_, false, comm.get());
    t.run();
    full = losses(t);
  }
  {
    Trainer t(config(dir_ / "split", set, world), ctx_, false, comm.get());
    t.run(/*stop_after_step=*/3);
  }
  const TrainConfig c = config(dir_ / "split", set, world);
  Trainer t(c, ctx_, /*resuming=*/true, comm.get());
  t.load_checkpoint(choose_resume_checkpoint("auto", c, comm.get(), ctx_).value());
  t.run();
  EXPECT_EQ(losses(t), std::vector<double>(full.begin() + 3, full.end()));
  sleepy_barrier(test::world());
  if (test::world().rank() == 0) {
    EXPECT_EQ(first_difference(checkpoint(dir_ / "full", 6), checkpoint(dir_ / "split", 6)), "");
  }
}

INSTANTIATE_TEST_SUITE_P(RecipesAndStates, SameWorldResume,
                         ::testing::Values(RecipeCase{"fp32", "bf16"}, RecipeCase{"fp32", "fp8"},
                                           RecipeCase{"bf16", "auto"}, RecipeCase{"fp8", "auto"},
                                           RecipeCase{"coat", "auto"}),
                         [](const ::testing::TestParamInfo<RecipeCase>& info) {
                           return std::string(info.param.recipe) + "_" + info.param.states;
                         });

// Hybrid sharding (shard groups of 2 in a world of 4): only the first shard group writes, and the checkpoint
// resumes bit-identically on the same groups and within 1e-5 on 3 plain ranks.
TEST_F(TrainingJob, HybridCheckpointResumesOnAnotherLayout) {
  if (test::world().world_size() != kMatrixWorld) GTEST_SKIP() << "runs in the np " << kMatrixWorld << " job";
  const auto set = [](nlohmann::json& c) { c["dist"]["shard_size"] = 2; };
  const auto plain = [](nlohmann::json&) {};
  dist::ProcessGroup::HybridGroups groups = test::world().split(2);
  auto world_comm = dist::make_communicator(test::world(), Device::cpu());
  auto shard_comm = dist::make_communicator(groups.shard, Device::cpu());
  auto replicate_comm = dist::make_communicator(groups.replicate, Device::cpu());
  const TrainerComms comms(world_comm.get(), shard_comm.get(), replicate_comm.get());
  std::vector<double> full;
  {
    Trainer t(config(dir_ / "full", set, kMatrixWorld), ctx_, false, comms);
    t.run();
    full = losses(t);
  }
  sleepy_barrier(test::world());
  const io::CheckpointReader written = io::CheckpointReader::open(checkpoint(dir_ / "full", 3));
  EXPECT_EQ(written.file_count(), 2);
  EXPECT_EQ(written.world_size(), 4);
  EXPECT_EQ(written.meta().at("shard_size"), 2);
  copy_checkpoint(dir_ / "full", 3, dir_ / "hybrid");
  {
    Trainer t(config(dir_ / "hybrid", set, kMatrixWorld), ctx_, true, comms);
    t.load_checkpoint(checkpoint(dir_ / "hybrid", 3));
    t.run();
    EXPECT_EQ(losses(t), std::vector<double>(full.begin() + 3, full.end()));
  }
  copy_checkpoint(dir_ / "full", 3, dir_ / "three");
  on_first_ranks(3, [&](dist::Communicator& comm) {
    Trainer t(config(dir_ / "three", plain, 3), ctx_, true, &comm);
    t.load_checkpoint(checkpoint(dir_ / "three", 3));
    t.run();
    const std::vector<double> resumed = losses(t);
    ASSERT_EQ(resumed.size(), 3u);
    for (size_t i = 0; i < 3; ++i)
      EXPECT_NEAR(resumed[i], full[3 + i], 1e-5 * std::abs(full[3 + i])) << "step " << 4 + i;
  });
}

}  // namespace
}  // namespace coat::train
