// ProcessGroup: the world from the launcher's environment, local ranks, the hybrid split, the log prefix.
#include <gtest/gtest.h>

#include <array>
#include <cstdlib>

#include "coat/dist/communicator.h"
#include "coat/ops/copy.h"
#include "dist_test_world.h"
#include "expect_error.h"

namespace coat::dist {
namespace {

using test::world;

TEST(ProcessGroup, WorldIsWhatTheLauncherSays) {
  const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
  const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");
  if (size == nullptr) {
    // A plain run: one process, and MPI left alone.
    EXPECT_EQ(world().world_size(), 1);
    EXPECT_EQ(world().rank(), 0);
    EXPECT_FALSE(world().uses_mpi());
    int initialized = 1;
    MPI_Initialized(&initialized);
    EXPECT_EQ(initialized, 0) << "a run without mpirun must not initialise MPI";
    return;
  }
  EXPECT_TRUE(world().uses_mpi());
  EXPECT_EQ(world().world_size(), std::atoi(size));
  ASSERT_NE(rank, nullptr);
  EXPECT_EQ(world().rank(), std::atoi(rank));
}

TEST(ProcessGroup, AllRanksOfOneMachineAreLocal) {
  // The tests run on one node: the node's ranks are the world's, in the same order.
  EXPECT_EQ(world().local_world_size(), world().world_size());
  EXPECT_EQ(world().local_rank(), world().rank());
}

TEST(ProcessGroup, LogPrefixNamesRanksOtherThanZero) {
  if (world().world_size() == 1 || world().rank() == 0) {
    EXPECT_EQ(world().log_prefix(), "");
  } else {
    EXPECT_EQ(world().log_prefix(), "[rank " + std::to_string(world().rank()) + "] ");
  }
  EXPECT_EQ(ProcessGroup::single_process().log_prefix(), "");
}

TEST(ProcessGroup, BroadcastBytesFromTheLastRank) {
  const int root = world().world_size() - 1;
  std::array<std::byte, 5> bytes{};
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::byte>(world().rank() * 10 + int(i));
  world().broadcast_bytes(bytes, root);
  for (size_t i = 0; i < bytes.size(); ++i) EXPECT_EQ(bytes[i], static_cast<std::byte>(root * 10 + int(i)));
  world().barrier();
}

TEST(ProcessGroup, SplitRefusesAShardSizeThatDoesNotDivideTheWorld) {
  const int world_size = world().world_size();
  test::expect_error_containing<InvalidArgument>(
      [&] { (void)world().split(world_size + 1); },
      "does not divide the world size " + std::to_string(world_size));
  test::expect_error_containing<InvalidArgument>([&] { (void)world().split(0); }, "shard_size 0");
}

TEST(ProcessGroup, SplitIntoOneShardGroupOrNoSharding) {
  const int world_size = world().world_size();
  const ProcessGroup::HybridGroups everything_sharded = world().split(world_size);
  EXPECT_EQ(everything_sharded.shard.world_size(), world_size);
  EXPECT_EQ(everything_sharded.shard.rank(), world().rank());
  EXPECT_EQ(everything_sharded.replicate.world_size(), 1);
  const ProcessGroup::HybridGroups nothing_sharded = world().split(1);
  EXPECT_EQ(nothing_sharded.shard.world_size(), 1);
  EXPECT_EQ(nothing_sharded.replicate.world_size(), world_size);
  EXPECT_EQ(nothing_sharded.replicate.rank(), world().rank());
}

TEST(ProcessGroup, HybridSplitShardsWithinPairsAndReplicatesAcross) {
  const int world_size = world().world_size();
  if (world_size % 2 != 0)
    GTEST_SKIP() << "needs an even world size (run with -np 2 or 4); this one is " << world_size;
  const int rank = world().rank();
  ProcessGroup::HybridGroups groups = world().split(2);
  EXPECT_EQ(groups.shard.world_size(), 2);
  EXPECT_EQ(groups.shard.rank(), rank % 2);
  EXPECT_EQ(groups.replicate.world_size(), world_size / 2);
  EXPECT_EQ(groups.replicate.rank(), rank / 2);
  EXPECT_EQ(groups.shard.local_world_size(), 2);
  // Who is in which group, seen through a sum of world ranks over each group.
  auto ctx = std::make_shared<CpuContext>();
  const double expected_shard_sum = (rank / 2 * 2) + (rank / 2 * 2 + 1);
  double expected_replicate_sum = 0;
  for (int r = rank % 2; r < world_size; r += 2) expected_replicate_sum += r;
  for (auto [group, expected] :
       {std::pair{&groups.shard, expected_shard_sum}, std::pair{&groups.replicate, expected_replicate_sum}}) {
    std::unique_ptr<Communicator> comm = make_communicator(*group, Device::cpu());
    Tensor value = ops::from_vector(ctx, {1}, DType::F64, std::vector<double>{double(rank)});
    comm->all_reduce(value);
    EXPECT_EQ(value.item(), expected);
  }
}

}  // namespace
}  // namespace coat::dist

namespace coat::dist {
namespace {

// The harness itself (ctest Dist.failure_on_one_rank_fails_the_job): a failure on one rank other than 0
// must make mpirun exit non-zero. Runs only when that ctest entry asks for it.
TEST(DistHarness, FailsOnTheRankTheEnvironmentNames) {
  const char* failing_rank = std::getenv("COAT_DIST_TEST_FAIL_ON_RANK");
  if (failing_rank == nullptr)
    GTEST_SKIP() << "checks the harness; set COAT_DIST_TEST_FAIL_ON_RANK to run it";
  EXPECT_NE(world().rank(), std::atoi(failing_rank)) << "deliberate failure";
}

}  // namespace
}  // namespace coat::dist
