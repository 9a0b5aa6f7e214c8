// FP8 all-gather (dist/fp8_gather.h) against one process: after a unit is gathered as E4M3 codes, its FP8
// weight copies (codes, transposed codes, scale, scale_inv) and its vectors are bit-identical to those one
// process makes from the same masters, for Llama (norm weights) and OLMo (none, tied head), after new weights
// too; and the bytes received are the codes' (half of BF16's) plus the vectors'.
#include <gtest/gtest.h>

#include "coat/dist/communicator.h"
#include "coat/dist/fsdp.h"
#include "coat/ops/copy.h"
#include "coat/ops/runtime.h"
#include "dist_test_world.h"
#include "models/model_pass.h"

namespace coat::dist {
namespace {

models::Transformer make_model(const ContextPtr& ctx, const models::ModelConfig& config, std::optional<models::ShardSpec> shard) {
  models::TransformerOptions options;
  options.recipe = models::make_recipe(models::RecipeKind::Coat, {}, config.num_hidden_layers);
  options.shard = shard;
  return models::Transformer(config, ctx, DType::F32, /*with_grads=*/true, DType::BF16, options);
}

void expect_same_bytes(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_TRUE(a.defined() && b.defined()) << what;
  EXPECT_EQ(a.shape(), b.shape()) << what;
  EXPECT_EQ(a.dtype(), b.dtype()) << what;
  EXPECT_TRUE(ops::to_bytes(a) == ops::to_bytes(b)) << what << " differs";
}

void check_gathered_units(models::Transformer& one, models::Transformer& sharded, FsdpUnits& fsdp) {
  models::UnitStore& s = sharded.store();
  models::UnitStore& o = one.store();
  for (size_t k = 0; k < s.units().size(); ++k) {
    if (!s.units()[k].fp8_linears) continue;
    ASSERT_TRUE(o.units()[k].fp8_linears) << s.units()[k].name;
    fsdp.before_forward(k);
    const auto ours = s.fp8_operands(k), theirs = o.fp8_operands(k);
    ASSERT_EQ(ours.size(), theirs.size());
    for (size_t i = 0; i < ours.size(); ++i) {
      const ops::Fp8PerTensor& a = s.fp8_weights(k).get(*ours[i].key);
      const ops::Fp8PerTensor& b = o.fp8_weights(k).get(*theirs[i].key);
      const std::string name = ours[i].key->name;
      expect_same_bytes(a.codes, b.codes, name + " codes");
      expect_same_bytes(a.codes_t, b.codes_t, name + " codes_t");
      expect_same_bytes(a.scale, b.scale, name + " scale");
      expect_same_bytes(a.scale_inv, b.scale_inv, name + " scale_inv");
    }
    for (size_t index : s.units()[k].loose)
      expect_same_bytes(s.parameter(index).value, o.parameter(index).value, s.parameter(index).name);
    fsdp.after_forward(k);
    EXPECT_FALSE(s.units()[k].loose_value.defined()) << "released after the forward";
  }
}

class Fp8Gather : public ::testing::TestWithParam<models::Architecture> {};

TEST_P(Fp8Gather, CopiesAreThoseOfOneProcess) {
  const ContextPtr ctx = ops::make_context(Device::cpu());
  const auto comm = make_communicator(test::world(), Device::cpu());
  const models::ModelConfig config = test::tiny_model(GetParam(), 0.3);
  models::Transformer one = make_model(ctx, config, std::nullopt);
  models::Transformer sharded = make_model(ctx, config, models::ShardSpec{comm->rank(), comm->world_size(), 128});
  FsdpUnits fsdp(sharded.store(), *comm, FsdpOptions{.reshard_after_forward = true, .fp8_all_gather = true});
  for (uint64_t seed : {3u, 11u}) {  // the second init is new weights: the scales are made again
    one.init(seed);
    sharded.init(seed);
    const int64_t before = fsdp.bytes_gathered();
    check_gathered_units(one, sharded, fsdp);
    int64_t expected = 0;
    for (const models::ParamUnit& u : sharded.store().units()) {
      if (!u.fp8_linears) continue;
      int64_t loose = 0;
      for (size_t index : u.loose) loose += static_cast<int64_t>(one.store().parameter(index).master.numel());
      expected += (u.shard.padded_numel() - u.shard.shard_numel) + loose * 2 * (comm->world_size() - 1);
    }
    EXPECT_EQ(fsdp.bytes_gathered() - before, expected) << "E4M3 codes and BF16 vectors from the other ranks";
  }
}

INSTANTIATE_TEST_SUITE_P(Architectures, Fp8Gather,
                         ::testing::Values(models::Architecture::Llama, models::Architecture::Olmo),
                         [](const auto& info) { return info.param == models::Architecture::Llama ? "Llama" : "Olmo"; });

}  // namespace
}  // namespace coat::dist
