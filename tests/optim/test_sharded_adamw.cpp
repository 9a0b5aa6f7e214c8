// AdamW over ranks' slices of a unit (FSDP's optimizer buffers: shard boundaries on state groups, the last
// slice padded with zeros, decay ranges clipped to each slice) gives the bits of AdamW over the whole unit,
// for every moment storage: each rank's state groups are the whole unit's groups.
#include <gtest/gtest.h>


#include "coat/models/unit_shard.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/runtime.h"
#include "coat/optim/adamw.h"
#include "random_values.h"

namespace coat {
namespace {

class ShardedAdamW : public ::testing::TestWithParam<ops::MomentEncoding> {};

const char* const kRankNames[] = {"u0", "u1", "u2", "u3"};  // one buffer name per rank

TEST_P(ShardedAdamW, SlicesGiveTheBitsOfTheWholeUnit) {
  auto ctx = ops::make_context(Device::cpu());
  const int64_t numel = 1000;  // not a multiple of the group size nor of the ranks
  const std::vector<ops::DecayRange> ranges{{0, 300}, {364, 900}};
  optim::AdamWConfig cfg{0.9f, 0.95f, 1e-8f, 0.1f, 0.0f};
  cfg.exp_avg.encoding = cfg.exp_avg_sq.encoding = GetParam();
  const std::vector<double> p0 = test::nonzero_normal(numel, 1, 0.0, 0.5);
  Tensor whole_p = ops::from_vector(ctx, {numel}, DType::F32, p0);
  Tensor whole_g = ops::zeros(ctx, {numel}, DType::F32);
  for (int world : {2, 3, 4}) {
    SCOPED_TRACE(::testing::Message() << "world " << world);
    std::vector<models::UnitShard> shards;
    std::vector<Tensor> params, grads;
    std::vector<optim::OptimBuffer> buffers;
    for (int r = 0; r < world; ++r) {
      const models::UnitShard s = models::UnitShard::of(numel, models::ShardSpec{r, world, 128});
      std::vector<double> slice(static_cast<size_t>(s.shard_numel), 0.0);
      for (int64_t i = 0; i < s.owned; ++i) slice[static_cast<size_t>(i)] = p0[static_cast<size_t>(s.begin + i)];
      shards.push_back(s);
      params.push_back(ops::from_vector(ctx, {s.shard_numel}, DType::F32, slice));
      grads.push_back(ops::zeros(ctx, {s.shard_numel}, DType::F32));
      buffers.push_back({kRankNames[r], params.back(), grads.back(),
                         optim::slice_decay_ranges(ranges, s.begin, s.shard_numel), {}});
    }
    optim::AdamW sharded(buffers, cfg);
    ops::copy_(whole_p, ops::from_vector(ctx, {numel}, DType::F32, p0));
    optim::AdamW reference({{"u", whole_p, whole_g, ranges, {}}}, cfg);
    for (int step = 0; step < 5; ++step) {
      const std::vector<double> g = test::nonzero_normal(static_cast<size_t>(numel), 10 + static_cast<uint32_t>(step), 0.0, 0.01 * (step + 1));
      ops::copy_(whole_g, ops::from_vector(ctx, {numel}, DType::F32, g));
      for (int r = 0; r < world; ++r) {
        std::vector<double> slice(static_cast<size_t>(shards[r].shard_numel), 0.0);
        for (int64_t i = 0; i < shards[r].owned; ++i) slice[static_cast<size_t>(i)] = g[static_cast<size_t>(shards[r].begin + i)];
        ops::copy_(grads[r], ops::from_vector(ctx, {shards[r].shard_numel}, DType::F32, slice));
      }
      reference.step(1e-2f);
      sharded.step(1e-2f);
    }
    const std::vector<uint8_t> expected = ops::to_bytes(whole_p);
    std::vector<uint8_t> got;
    for (int r = 0; r < world; ++r) {
      const std::vector<uint8_t> b = ops::to_bytes(params[r]);
      got.insert(got.end(), b.begin(), b.begin() + shards[r].owned * 4);
      // The padding stays zero.
      for (size_t i = static_cast<size_t>(shards[r].owned) * 4; i < b.size(); ++i) ASSERT_EQ(b[i], 0) << "rank " << r;
    }
    EXPECT_EQ(got, expected);
    const std::vector<double> m = ops::to_double_vector(reference.exp_avg_f32(0));
    for (int r = 0; r < world; ++r) {
      const std::vector<double> ms = ops::to_double_vector(sharded.exp_avg_f32(static_cast<size_t>(r)));
      for (int64_t i = 0; i < shards[r].owned; ++i)
        ASSERT_EQ(ms[static_cast<size_t>(i)], m[static_cast<size_t>(shards[r].begin + i)]) << "rank " << r << " element " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Storages, ShardedAdamW,
                         ::testing::Values(ops::MomentEncoding::F32, ops::MomentEncoding::BF16, ops::MomentEncoding::FP8,
                                           ops::MomentEncoding::FP8Expand),
                         [](const auto& info) {
                           switch (info.param) {
                             case ops::MomentEncoding::F32: return std::string("F32");
                             case ops::MomentEncoding::BF16: return std::string("BF16");
                             case ops::MomentEncoding::FP8: return std::string("FP8");
                             default: return std::string("FP8Expand");
                           }
                         });

}  // namespace
}  // namespace coat
