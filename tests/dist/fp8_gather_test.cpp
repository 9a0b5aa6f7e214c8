// FP8 all-gather (dist/fp8_gather.h) against one process: after a unit is gathered as E4M3 codes, its FP8
// weight copies (codes, transposed codes, scale, scale_inv) and its vectors are bit-identical to those one
// process makes from the same masters, for Llama (norm weights) and OLMo (none, tied head), after new weights
// too; and the bytes received are the codes' (half of BF16's) plus the vectors'.
#include <gtest/gtest.h>

#include "coat/dist/communicator.h"
#include "coat/dist/fsdp.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
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
  FsdpOptions options;  // (set by name: GCC 12 warns on designated initializers that skip reduce_dtype)
  options.reshard_after_forward = true;
  options.fp8_all_gather = true;
  FsdpUnits fsdp(sharded.store(), *comm, options);
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

/// Two forward + backward passes of a sharded model with FSDP's hooks: per pass the loss and each unit's
/// gradient slice, as bytes.
std::vector<std::vector<uint8_t>> two_passes(const ContextPtr& ctx, Communicator& comm, int64_t prefetch,
                                             std::optional<DType> compute, int64_t& ahead) {
  const models::ModelConfig config = test::tiny_model(models::Architecture::Llama, 0.3);
  models::TransformerOptions options;
  options.recipe = models::make_recipe(compute ? models::RecipeKind::Coat : models::RecipeKind::FP32, {},
                                       config.num_hidden_layers);
  options.shard = models::ShardSpec{comm.rank(), comm.world_size(), 128};
  models::Transformer model(config, ctx, DType::F32, true, compute, options);
  model.init(5);
  FsdpOptions fsdp_options;
  fsdp_options.fp8_all_gather = compute.has_value();
  fsdp_options.prefetch = prefetch;
  FsdpUnits fsdp(model.store(), comm, fsdp_options);
  model.set_unit_hooks(&fsdp);
  std::vector<double> ids_v, targets_v;
  for (int i = 0; i < 32; ++i) {
    ids_v.push_back((i * 7) % 50);
    targets_v.push_back((i * 7 + 3) % 50);
  }
  const Tensor ids = ops::from_vector(ctx, {2, 16}, DType::I32, ids_v), targets = ops::from_vector(ctx, {2, 16}, DType::I32, targets_v);
  std::vector<std::vector<uint8_t>> out;
  for (int pass = 0; pass < 2; ++pass) {
    model.zero_grad();
    autograd::Tape tape;
    nn::LossOutput loss = model.forward(tape, ids, targets, -1, 1.0 / 32.0);
    const double sum = loss.read().loss_sum;
    out.emplace_back(reinterpret_cast<const uint8_t*>(&sum), reinterpret_cast<const uint8_t*>(&sum) + sizeof sum);
    tape.backward(loss.root, ops::full(ctx, {1}, 1.0, DType::F64));
    for (const models::ParamUnit& u : model.store().units()) out.push_back(ops::to_bytes(u.grad_shard));
  }
  ahead = fsdp.gathers_ahead();
  return out;
}

// dist.prefetch: the next units' all-gathers are issued ahead (after the first pass has shown the order), and
// the losses and gradient slices are those of gathering each unit when it is needed, bit for bit.
TEST(FsdpPrefetch, IssuesTheNextUnitsAheadAndChangesNoBits) {
  const ContextPtr ctx = ops::make_context(Device::cpu());
  const auto comm = make_communicator(test::world(), Device::cpu());
  for (const std::optional<DType> compute : {std::optional<DType>(), std::optional<DType>(DType::BF16)}) {
    int64_t none = -1, ahead = -1;
    const auto expected = two_passes(ctx, *comm, 0, compute, none);
    const auto got = two_passes(ctx, *comm, 2, compute, ahead);
    EXPECT_EQ(none, 0);
    EXPECT_GT(ahead, 0) << "no all-gather was issued ahead";
    ASSERT_EQ(got.size(), expected.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(got[i] == expected[i]) << "item " << i << (compute ? " (coat)" : " (fp32)");
  }
}

INSTANTIATE_TEST_SUITE_P(Architectures, Fp8Gather,
                         ::testing::Values(models::Architecture::Llama, models::Architecture::Olmo),
                         [](const auto& info) { return info.param == models::Architecture::Llama ? "Llama" : "Olmo"; });

}  // namespace
}  // namespace coat::dist
