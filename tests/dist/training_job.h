// The fixture of the dist tests that train and checkpoint on part of the job's ranks: one run directory tree
// for the job, a token file per rank, sub-runs on the job's first ranks (the others wait without spinning).
#pragma once

#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "coat/data/token_file.h"
#include "coat/dist/communicator.h"
#include "coat/io/checkpoint.h"
#include "coat/ops/runtime.h"
#include "coat/train/train_config.h"
#include "dist_test_world.h"

namespace coat::train {

namespace fs = std::filesystem;

/// A barrier that sleeps between polls: the ranks left out of a sub-run wait here without taking the CPU
/// from the ranks that train (CI oversubscribes two cores with four ranks).
inline void sleepy_barrier(const dist::ProcessGroup& group) {
  if (!group.uses_mpi()) return;
  MPI_Request request = MPI_REQUEST_NULL;
  MPI_Ibarrier(group.mpi_comm(), &request);
  for (int done = 0;;) {
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (done) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

class TrainingJob : public ::testing::Test {
 protected:
  void SetUp() override {
    int64_t id = ::getpid();
    test::world().broadcast_bytes(std::as_writable_bytes(std::span<int64_t>(&id, 1)), 0);
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string(info->test_suite_name()) + "_" + info->name();
    for (char& c : name) c = c == '/' ? '_' : c;
    dir_ = fs::temp_directory_path() / ("coat_resume_" + std::to_string(id) + "_" + name);
    rank_dir_ = dir_ / ("rank" + std::to_string(test::world().rank()));
    fs::create_directories(rank_dir_);
    std::mt19937 rng(5);
    std::vector<uint32_t> tokens(6000);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = (rng() % 4 == 0) ? rng() % 64 : (i * 7) % 64;
    data::write_token_file(rank_dir_ / "tokens.bin", tokens, data::TokenWidth::U16, 64);
  }
  void TearDown() override {
    sleepy_barrier(test::world());
    if (test::world().rank() == 0) fs::remove_all(dir_);
  }

  /// configs/test_small.json: 6 steps of a global batch every world size up to 4 divides, checkpoints at 3
  /// and 6.
  TrainConfig config(const fs::path& run_dir, const std::function<void(nlohmann::json&)>& set,
                     int ranks) const {
    std::ifstream in(std::string(COAT_SOURCE_DIR) + "/configs/test_small.json");
    nlohmann::json c = nlohmann::json::parse(in);
    c["data"]["path"] = (rank_dir_ / "tokens.bin").string();
    c["logging"]["run_dir"] = run_dir.string();
    c["logging"]["progress"] = "off";
    c["train"]["micro_batch_size"] = 1;
    c["train"]["global_batch_size"] = 12;
    c["train"]["max_steps"] = 6;
    c["train"]["eval_interval"] = 0;
    c["checkpoint"]["interval"] = 3;
    c["checkpoint"]["keep_last"] = 0;
    set(c);
    return parse_train_config(c, "c.json", ranks);
  }

  /// Runs `work` with a communicator of the job's first `ranks` ranks on those ranks; every rank returns once
  /// all are done.
  void on_first_ranks(int ranks, const std::function<void(dist::Communicator&)>& work) {
    std::optional<dist::ProcessGroup> group = test::world().first_ranks(ranks);
    if (group) {
      auto comm = dist::make_communicator(*group, Device::cpu());
      work(*comm);
    }
    sleepy_barrier(test::world());
  }

  /// A copy of checkpoint `step` of run `from` as the only checkpoint of a new run directory `to` (rank 0).
  void copy_checkpoint(const fs::path& from, int64_t step, const fs::path& to) {
    if (test::world().rank() == 0) {
      fs::create_directories(io::checkpoints_root(to));
      fs::copy(io::checkpoints_root(from) / io::checkpoint_dir_name(step),
               io::checkpoints_root(to) / io::checkpoint_dir_name(step), fs::copy_options::recursive);
    }
    sleepy_barrier(test::world());
  }

  static fs::path checkpoint(const fs::path& run, int64_t step) {
    return io::checkpoints_root(run) / io::checkpoint_dir_name(step);
  }

  ContextPtr ctx_ = ops::make_context(Device::cpu());
  fs::path dir_, rank_dir_;
};

}  // namespace coat::train
