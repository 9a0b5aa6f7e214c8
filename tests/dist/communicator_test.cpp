// Communicators against one process's arithmetic: every rank builds every rank's input from a seed, so it
// knows the exact answer alone; sums must equal a plain loop over the ranks in rank order, bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "coat/core/float_formats.h"
#include "coat/dist/communicator.h"
#include "coat/ops/copy.h"
#include "coat/ops/runtime.h"
#include "dist_test_world.h"
#include "expect_error.h"
#include "random_values.h"

namespace coat::dist {
namespace {

using test::world;

// Rank q's input: random, never zero, different per rank and per test (seed).
std::vector<double> rank_values(int64_t n, uint32_t seed, int rank) {
  return test::nonzero_normal(static_cast<size_t>(n), seed * 1000u + static_cast<uint32_t>(rank));
}

// The values rank q's tensor holds (rounded to dtype), as every rank can compute them.
std::vector<double> stored_values(int64_t n, uint32_t seed, int rank, DType dtype) {
  auto cpu = std::make_shared<CpuContext>();
  return ops::to_double_vector(ops::from_vector(cpu, {n}, dtype, rank_values(n, seed, rank)));
}

// The reduction of the ranks' stored values for the elements [first, first + n): left to right over the
// ranks in the accumulation type (double for F64, float otherwise), as the MPI communicator documents.
std::vector<double> reduced_in_rank_order(int64_t total, int64_t first, int64_t n, uint32_t seed, DType dtype,
                                          ReduceOp op, int world_size) {
  std::vector<std::vector<double>> per_rank;
  for (int q = 0; q < world_size; ++q) per_rank.push_back(stored_values(total, seed, q, dtype));
  std::vector<double> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const size_t at = static_cast<size_t>(first + i);
    if (dtype == DType::F64) {
      double acc = per_rank[0][at];
      for (int q = 1; q < world_size; ++q)
        acc = op == ReduceOp::Max ? std::max(acc, per_rank[q][at]) : acc + per_rank[q][at];
      out[static_cast<size_t>(i)] = op == ReduceOp::Average ? acc / world_size : acc;
    } else {
      float acc = static_cast<float>(per_rank[0][at]);
      for (int q = 1; q < world_size; ++q) {
        const float x = static_cast<float>(per_rank[q][at]);
        acc = op == ReduceOp::Max ? std::max(acc, x) : acc + x;
      }
      out[static_cast<size_t>(i)] = op == ReduceOp::Average ? acc / static_cast<float>(world_size) : acc;
    }
  }
  return out;
}

// A context on `device`, or the reason this run cannot test it.
struct CommunicatorSetup {
  ContextPtr context;
  std::unique_ptr<Communicator> comm;
  std::string skip_reason;
};

CommunicatorSetup setup_for(Device device, CommunicatorKind kind = CommunicatorKind::Auto) {
  if (device.is_cuda() && ops::cuda_device_count() == 0) return {nullptr, nullptr, "no CUDA device"};
  if (kind == CommunicatorKind::Mpi && !world().uses_mpi())
    return {nullptr, nullptr, "not launched by mpirun"};
  if (kind == CommunicatorKind::Nccl && world().local_world_size() > ops::cuda_device_count())
    return {nullptr, nullptr, "NCCL needs a GPU per rank: more ranks than GPUs"};
  // Every rank takes part in making the communicator (it is collective), so the skips above are the same
  // on every rank: they depend on the node and the launcher only.
  return {ops::make_context(device), make_communicator(world(), device, kind), ""};
}

// The places a collective runs: CPU tensors through the default choice, CUDA tensors staged through MPI
// (several ranks on one GPU), CUDA tensors through NCCL (a GPU per rank).
struct Place {
  const char* name;
  Device device;
  CommunicatorKind kind;
};
const Place kPlaces[] = {{"cpu", Device::cpu(), CommunicatorKind::Auto},
                         {"cuda_staged_mpi", Device::cuda(0), CommunicatorKind::Mpi},
                         {"cuda_nccl", Device::cuda(0), CommunicatorKind::Nccl}};

class Collectives : public ::testing::TestWithParam<Place> {
 protected:
  void SetUp() override {
    Place place = GetParam();
    if (place.kind == CommunicatorKind::Nccl) place.device = Device::cuda(world().local_rank());
    setup_ = setup_for(place.device, place.kind);
    if (!setup_.skip_reason.empty()) GTEST_SKIP() << setup_.skip_reason;
  }
  bool is_nccl() const { return GetParam().kind == CommunicatorKind::Nccl; }
  Communicator& comm() { return *setup_.comm; }
  const ContextPtr& ctx() { return setup_.context; }
  Tensor rank_tensor(int64_t n, uint32_t seed, DType dtype) {
    return ops::from_vector(ctx(), {n}, dtype, rank_values(n, seed, comm().rank()));
  }
  Tensor host_tensor(const std::vector<double>& values, DType dtype) {
    return ops::from_vector(std::make_shared<CpuContext>(), {int64_t(values.size())}, dtype, values);
  }
  // Waits for the collective (NCCL queues it) and checks that the result has the expected bytes.
  void expect_bytes(CommWork& work, const Tensor& result, const Tensor& expected) {
    work.synchronize();
    ctx()->synchronize();
    EXPECT_EQ(ops::to_bytes(result), ops::to_bytes(expected)) << GetParam().name << " " << result.str();
  }

  CommunicatorSetup setup_;
};

TEST_P(Collectives, AllGatherConcatenatesInRankOrder) {
  // Bytes move unchanged: FP8 codes, BF16 and integers alike. 37 elements: nothing aligned.
  const int64_t n = 37;
  for (DType dtype : {DType::F32, DType::BF16, DType::E4M3, DType::E5M2, DType::I64, DType::F64}) {
    Tensor input = rank_tensor(n, 11, dtype);
    Tensor output = Tensor::empty(ctx(), {comm().world_size(), n}, dtype);
    CommWork work = comm().all_gather(input, output);
    std::vector<double> expected;
    for (int q = 0; q < comm().world_size(); ++q) {
      const std::vector<double> values = rank_values(n, 11, q);
      expected.insert(expected.end(), values.begin(), values.end());
    }
    expect_bytes(work, output, host_tensor(expected, dtype).reshape({comm().world_size(), n}));
  }
}

TEST_P(Collectives, AllGatherInPlaceFromTheRanksOwnSlice) {
  const int64_t n = 29;
  const int world_size = comm().world_size();
  Tensor output = ops::from_vector(ctx(), {world_size * n}, DType::F32,
                                   std::vector<double>(size_t(world_size * n), -1.0));
  Tensor own = output.slice(0, comm().rank() * n, (comm().rank() + 1) * n);
  ops::copy_(own, rank_tensor(n, 12, DType::F32));
  CommWork work = comm().all_gather(own, output);
  std::vector<double> expected;
  for (int q = 0; q < world_size; ++q) {
    const std::vector<double> values = rank_values(n, 12, q);
    expected.insert(expected.end(), values.begin(), values.end());
  }
  expect_bytes(work, output, host_tensor(expected, DType::F32));
}

TEST_P(Collectives, ReduceScatterSumsEachSliceInRankOrder) {
  const int64_t n = 41;
  const int world_size = comm().world_size();
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Average, ReduceOp::Max}) {
    for (DType dtype : {DType::F32, DType::BF16, DType::F64}) {
      // NCCL's order is its own (a ring): its sums are checked on exact integers below.
      if (is_nccl() && op != ReduceOp::Max) continue;
      Tensor input = rank_tensor(world_size * n, 21, dtype);
      Tensor output = Tensor::empty(ctx(), {n}, dtype);
      CommWork work = comm().reduce_scatter(input, output, op);
      const std::vector<double> expected =
          reduced_in_rank_order(world_size * n, comm().rank() * n, n, 21, dtype, op, world_size);
      SCOPED_TRACE(std::string(reduce_op_name(op)) + " " + std::string(dtype_name(dtype)));
      expect_bytes(work, output, host_tensor(expected, dtype));
    }
  }
}

TEST_P(Collectives, ReduceScatterInPlaceIntoTheRanksOwnSlice) {
  const int64_t n = 16;
  const int world_size = comm().world_size();
  Tensor input = rank_tensor(world_size * n, 22, DType::F32);
  Tensor own = input.slice(0, comm().rank() * n, (comm().rank() + 1) * n);
  // Integer-valued checks are exact in any order; here the MPI order matters, so NCCL checks max only.
  const ReduceOp op = is_nccl() ? ReduceOp::Max : ReduceOp::Sum;
  CommWork work = comm().reduce_scatter(input, own, op);
  const std::vector<double> expected =
      reduced_in_rank_order(world_size * n, comm().rank() * n, n, 22, DType::F32, op, world_size);
  expect_bytes(work, own, host_tensor(expected, DType::F32));
}

TEST_P(Collectives, AllReduceSumAndAverageInRankOrder) {
  if (is_nccl())
    GTEST_SKIP() << "NCCL sums in its own (ring) order: AllReduceSumOfIntegersIsExactEverywhere checks it";
  const int64_t n = 53;
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Average}) {
    for (DType dtype : {DType::F32, DType::BF16, DType::F64, DType::F16}) {
      Tensor tensor = rank_tensor(n, 31, dtype);
      CommWork work = comm().all_reduce(tensor, op);
      const std::vector<double> expected = reduced_in_rank_order(n, 0, n, 31, dtype, op, comm().world_size());
      SCOPED_TRACE(std::string(reduce_op_name(op)) + " " + std::string(dtype_name(dtype)));
      expect_bytes(work, tensor, host_tensor(expected, dtype));
    }
  }
}

TEST_P(Collectives, AllReduceSumOfIntegersIsExactEverywhere) {
  // Small integers: every order of summation gives the same bits, so NCCL is held to it too.
  const int64_t n = 19;
  const int rank = comm().rank();
  for (DType dtype : {DType::F32, DType::BF16, DType::I32, DType::I64, DType::F64}) {
    std::vector<double> mine(static_cast<size_t>(n)), expected(static_cast<size_t>(n), 0.0);
    for (int64_t i = 0; i < n; ++i) {
      mine[size_t(i)] = double((i * 7 + rank * 3) % 11 - 5);
      for (int q = 0; q < comm().world_size(); ++q) expected[size_t(i)] += double((i * 7 + q * 3) % 11 - 5);
    }
    Tensor tensor = ops::from_vector(ctx(), {n}, dtype, mine);
    CommWork work = comm().all_reduce(tensor, ReduceOp::Sum);
    SCOPED_TRACE(dtype_name(dtype));
    expect_bytes(work, tensor, host_tensor(expected, dtype));
  }
}

TEST_P(Collectives, AllReduceMaxIsTheAmaxOfEveryRank) {
  // The FP8 amax: one scalar per tensor, the largest of the ranks'.
  Tensor amax = ops::from_vector(ctx(), {1}, DType::F32, std::vector<double>{1.0 + comm().rank() * 0.25});
  CommWork work = comm().all_reduce(amax, ReduceOp::Max);
  expect_bytes(work, amax, host_tensor({1.0 + (comm().world_size() - 1) * 0.25}, DType::F32));

  Tensor values = rank_tensor(64, 32, DType::BF16);
  CommWork max_work = comm().all_reduce(values, ReduceOp::Max);
  expect_bytes(
      max_work, values,
      host_tensor(reduced_in_rank_order(64, 0, 64, 32, DType::BF16, ReduceOp::Max, comm().world_size()),
                  DType::BF16));
}

TEST_P(Collectives, AllReduceMaxKeepsANaNFromAnyRank) {
  // A non-finite amax on one rank must reach all of them (the step is then skipped everywhere).
  if (is_nccl())
    GTEST_SKIP() << "NCCL does not promise that max keeps a NaN: send non-finite flags separately";
  const int last = comm().world_size() - 1;
  std::vector<double> mine{1.0, 2.0, 3.0};
  if (comm().rank() == last) mine[1] = std::numeric_limits<double>::quiet_NaN();
  Tensor tensor = ops::from_vector(ctx(), {3}, DType::F32, mine);
  comm().all_reduce(tensor, ReduceOp::Max).synchronize();
  const std::vector<double> result = ops::to_double_vector(tensor);
  EXPECT_EQ(result[0], 1.0);
  EXPECT_TRUE(std::isnan(result[1]));
  EXPECT_EQ(result[2], 3.0);
}

TEST_P(Collectives, BroadcastFromTheLastRank) {
  const int root = comm().world_size() - 1;
  for (DType dtype : {DType::F32, DType::E4M3, DType::BF16}) {
    Tensor tensor = rank_tensor(33, 41, dtype);
    CommWork work = comm().broadcast(tensor, root);
    expect_bytes(work, tensor, host_tensor(rank_values(33, 41, root), dtype));
  }
}

TEST_P(Collectives, BarrierReturnsOnEveryRank) {
  comm().barrier();
  comm().barrier();
}

TEST_P(Collectives, RefusesWhatCannotWork) {
  // All checks run before any communication, so a refused call leaves the ranks in step.
  const int world_size = comm().world_size();
  Tensor input = rank_tensor(8, 51, DType::F32);
  Tensor wrong = Tensor::empty(ctx(), {8 * world_size + 1}, DType::F32);
  test::expect_error_containing<InvalidArgument>(
      [&] { comm().all_gather(input, wrong); },
      "[all_gather] output has " + std::to_string(8 * world_size + 1));
  Tensor out = Tensor::empty(ctx(), {8}, DType::F32);
  Tensor not_divisible = rank_tensor(8 * world_size + 1, 52, DType::F32);
  test::expect_error_containing<InvalidArgument>([&] { comm().reduce_scatter(not_divisible, out); },
                                                 "HINT: pad the input to a multiple of the world size");
  Tensor codes = rank_tensor(8, 53, DType::E4M3);
  test::expect_error_containing<InvalidArgument>([&] { comm().all_reduce(codes); }, "FP8 codes are gathered");
  Tensor integers = ops::from_vector(ctx(), {4}, DType::I32, std::vector<double>{1, 2, 3, 4});
  test::expect_error_containing<InvalidArgument>([&] { comm().all_reduce(integers, ReduceOp::Average); },
                                                 "average of i32");
  Tensor bf16_out = Tensor::empty(ctx(), {8 * world_size}, DType::BF16);
  test::expect_error_containing<InvalidArgument>([&] { comm().all_gather(input, bf16_out); },
                                                 "input dtype f32 differs from output dtype bf16");
  Tensor matrix = rank_tensor(16, 54, DType::F32).reshape({4, 4});
  Tensor columns = matrix.transpose(0, 1);
  test::expect_error_containing<InvalidArgument>([&] { comm().all_reduce(columns); }, "is not contiguous");
  test::expect_error_containing<InvalidArgument>([&] { comm().broadcast(input, world_size); },
                                                 "root " + std::to_string(world_size) + " is not a rank");
  if (world_size > 1) {
    // Another rank's slice as this rank's input would overwrite what it still has to send.
    Tensor gathered = Tensor::empty(ctx(), {8 * world_size}, DType::F32);
    const int64_t other = (comm().rank() + 1) % world_size;
    Tensor foreign = gathered.slice(0, other * 8, (other + 1) * 8);
    test::expect_error_containing<InvalidArgument>([&] { comm().all_gather(foreign, gathered); },
                                                   "not this rank's slice");
  }
}

INSTANTIATE_TEST_SUITE_P(Dist, Collectives, ::testing::ValuesIn(kPlaces),
                         [](const ::testing::TestParamInfo<Place>& info) {
                           return std::string(info.param.name);
                         });

TEST(MakeCommunicator, PicksByWorldAndDevice) {
  std::unique_ptr<Communicator> cpu = make_communicator(world(), Device::cpu());
  EXPECT_EQ(cpu->kind(), world().world_size() == 1 ? CommunicatorKind::Local : CommunicatorKind::Mpi);
  EXPECT_EQ(cpu->world_size(), world().world_size());
  EXPECT_EQ(cpu->rank(), world().rank());
  if (world().world_size() > 1) {
    test::expect_error_containing<InvalidArgument>(
        [&] { (void)make_communicator(world(), Device::cpu(), CommunicatorKind::Local); },
        "serves a world of 1");
  }
  if (!world().uses_mpi()) {
    test::expect_error_containing<InvalidArgument>(
        [&] { (void)make_communicator(world(), Device::cpu(), CommunicatorKind::Mpi); },
        "not launched by mpirun");
  }
#ifndef COAT_WITH_CUDA
  test::expect_error_containing<NotImplemented>(
      [&] { (void)make_communicator(world(), Device::cuda(0), CommunicatorKind::Nccl); }, "no CUDA backend");
#endif
}

TEST(MakeCommunicator, RanksSharingAGpuAreStagedThroughMpi) {
  if (ops::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  // What a trainer passes: its own GPU when there is one per rank, else the shared one.
  const Device device = Device::cuda(world().local_rank() % ops::cuda_device_count());
  std::unique_ptr<Communicator> comm = make_communicator(world(), device);
  if (world().world_size() == 1) {
    EXPECT_EQ(comm->kind(), CommunicatorKind::Local);
  } else if (world().local_world_size() > ops::cuda_device_count()) {
    EXPECT_EQ(comm->kind(), CommunicatorKind::Mpi);
  } else {
    EXPECT_EQ(comm->kind(), CommunicatorKind::Nccl);
  }
}

}  // namespace
}  // namespace coat::dist
