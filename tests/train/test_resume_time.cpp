// Resume time (not run by ctest): a checkpoint of a model of about 25 M parameters (some 300 MB of masters
// and FP32 moments) is resumed as coat-train resumes (open_resume_checkpoint, then the load: each byte
// checksummed once) and as it did before (choose_resume_checkpoint, then a load by directory, which checksums
// every tensor again), with the files in the page cache (warm) and dropped from it first (cold), printing
// seconds. Run:
//   build-cpu/tests/coat_test_train --gtest_also_run_disabled_tests --gtest_filter='*DISABLED_ResumeTime'
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "coat/io/checkpoint.h"
#include "coat/ops/runtime.h"
#include "coat/train/resume.h"
#include "coat/train/trainer.h"
#include "small_run_test.h"

namespace coat::train {
namespace {

namespace fs = std::filesystem;

class ResumeTime : public SmallRunTest {
 protected:
  TrainConfig config() const {
    nlohmann::json c = small_config("run");
    c["model"]["hidden_size"] = 512;
    c["model"]["intermediate_size"] = 1376;
    c["model"]["num_hidden_layers"] = 8;
    c["model"]["num_attention_heads"] = 8;
    c["model"]["num_key_value_heads"] = 8;
    c["checkpoint"]["keep_last"] = 0;
    return parse_train_config(c, "c.json");
  }
  /// Drops the checkpoint's files (clean, synced) from the page cache.
  static void drop_cached_pages(const fs::path& dir) {
    for (const auto& e : fs::directory_iterator(dir)) {
      const int fd = ::open(e.path().c_str(), O_RDONLY | O_CLOEXEC);
      ASSERT_GE(fd, 0) << e.path();
      ::fdatasync(fd);
      ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
      ::close(fd);
    }
  }
  static double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  ContextPtr ctx_ = ops::make_context(Device::cpu());
};

TEST_F(ResumeTime, DISABLED_ResumeTime) {
  const TrainConfig c = config();
  {
    Trainer t(c, ctx_);
    t.save_checkpoint();  // step 0
  }
  const fs::path dir = io::checkpoints_root(dir_ / "run") / io::checkpoint_dir_name(0);
  uint64_t bytes = 0;
  for (const auto& e : fs::directory_iterator(dir)) bytes += fs::file_size(e.path());
  std::printf("checkpoint of %lld parameters: %.1f MB; checkpoint.io_threads %d\n",
              static_cast<long long>(c.model.parameter_count()), static_cast<double>(bytes) / 1e6,
              c.checkpoint.io_threads);
  {
    Trainer first(c, ctx_, /*resuming=*/true);  // untimed: the first touches of the code and the files
    first.load_checkpoint(choose_resume_checkpoint("auto", c, nullptr, ctx_).value());
  }
  for (int repeat = 0; repeat < 3; ++repeat) {
    for (bool cold : {false, true}) {
      Trainer before(c, ctx_, /*resuming=*/true), after(c, ctx_, /*resuming=*/true);
      if (cold) drop_cached_pages(dir);
      auto start = std::chrono::steady_clock::now();
      before.load_checkpoint(choose_resume_checkpoint("auto", c, nullptr, ctx_).value());
      const double twice_s = seconds_since(start);
      if (cold) drop_cached_pages(dir);
      start = std::chrono::steady_clock::now();
      const io::CheckpointReader ck = open_resume_checkpoint("auto", c, nullptr, ctx_).value();
      after.load_checkpoint(ck);
      const double once_s = seconds_since(start);
      std::printf(
          "%s: verify + load by directory (each byte checksummed twice) %.3f s | open_resume_checkpoint "
          "+ load (once) %.3f s; %.1f MB checksummed\n",
          cold ? "cold" : "warm", twice_s, once_s, static_cast<double>(ck.checksummed_bytes()) / 1e6);
      EXPECT_EQ(ck.checksummed_bytes(),
                bytes - fs::file_size(dir / "meta.json") - fs::file_size(dir / "COMPLETE"));
    }
  }
}

}  // namespace
}  // namespace coat::train
