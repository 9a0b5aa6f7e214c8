// FP8 all-gather (dist/fp8_gather.h) against one process: after a unit is gathered as E4M3 codes, its FP8
// weight copies (codes, transposed codes, scale, scale_inv) and its vectors are bit-identical to those one
// process makes from the same masters, for Llama (norm weights) and OLMo (none, tied head), after new weights
// too; and the bytes received are the codes' (half of BF16's) plus the vectors'. The same under fp8_block
// (128x128 block scales; nn::Fp8BlockWeights' W and W^T with their scales), with shard boundaries inside
// blocks (at the trainer's 128-element alignment and at any element).
#include <gtest/gtest.h>

#include <cstdio>

#include "coat/dist/communicator.h"
#include "coat/dist/fsdp.h"
#include "coat/ops/copy.h"
#include "coat/ops/creation.h"
#include "coat/ops/runtime.h"
#include "dist_test_world.h"
#include "models/model_pass.h"

namespace coat::dist {
namespace {

models::Transformer make_model(const ContextPtr& ctx, const models::ModelConfig& config,
                               std::optional<models::ShardSpec> shard,
                               models::RecipeKind recipe = models::RecipeKind::Coat) {
  models::TransformerOptions options;
  options.recipe = models::make_recipe(recipe, {}, config.num_hidden_layers);
  options.shard = shard;
  return models::Transformer(config, ctx, DType::F32, /*with_grads=*/true, DType::BF16, options);
}

void expect_same_bytes(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_TRUE(a.defined() && b.defined()) << what;
  EXPECT_EQ(a.shape(), b.shape()) << what;
  EXPECT_EQ(a.dtype(), b.dtype()) << what;
  EXPECT_TRUE(ops::to_bytes(a) == ops::to_bytes(b)) << what << " differs";
}

/// Gathers every FP8 unit of `sharded` with FSDP's forward hook and calls compare(unit, ours, theirs) for
/// each FP8 matrix (`sharded`'s operand and `one`'s); its vectors are one process's, and are released after
/// it.
template <typename Compare>
void check_gathered_units(models::Transformer& one, models::Transformer& sharded, FsdpUnits& fsdp,
                          Compare compare) {
  models::UnitStore& s = sharded.store();
  models::UnitStore& o = one.store();
  for (size_t k = 0; k < s.units().size(); ++k) {
    if (!s.units()[k].fp8_linears) continue;
    ASSERT_TRUE(o.units()[k].fp8_linears) << s.units()[k].name;
    fsdp.before_forward(k);
    const auto ours = s.fp8_operands(k), theirs = o.fp8_operands(k);
    ASSERT_EQ(ours.size(), theirs.size());
    for (size_t i = 0; i < ours.size(); ++i) compare(k, ours[i], theirs[i]);
    for (size_t index : s.units()[k].loose)
      expect_same_bytes(s.parameter(index).value, o.parameter(index).value, s.parameter(index).name);
    fsdp.after_forward(k);
    EXPECT_FALSE(s.units()[k].loose_value.defined()) << "released after the forward";
  }
}

/// The per-tensor FP8 copies (fp8, coat) of each gathered matrix against one process's.
void check_gathered_units(models::Transformer& one, models::Transformer& sharded, FsdpUnits& fsdp) {
  check_gathered_units(one, sharded, fsdp,
                       [&](size_t k, const models::Fp8Operand& ours, const models::Fp8Operand& theirs) {
                         const ops::Fp8PerTensor& a = sharded.store().fp8_weights(k).get(*ours.key);
                         const ops::Fp8PerTensor& b = one.store().fp8_weights(k).get(*theirs.key);
                         const std::string name = ours.key->name;
                         expect_same_bytes(a.codes, b.codes, name + " codes");
                         expect_same_bytes(a.codes_t, b.codes_t, name + " codes_t");
                         expect_same_bytes(a.scale, b.scale, name + " scale");
                         expect_same_bytes(a.scale_inv, b.scale_inv, name + " scale_inv");
                       });
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

// ---- fp8_block: 128x128 block scales ----

/// Every linear 128-divisible both ways: hidden 128 (qkv [256 or 384, 128]), intermediate 384 (down_proj
/// [128, 384]: three blocks a row, so boundaries at 128-element alignment fall inside its rows too).
models::ModelConfig block_model(models::Architecture arch) {
  models::ModelConfig c = test::tiny_model(arch, 0.3);
  c.hidden_size = 128;
  c.intermediate_size = 384;
  return c;
}

FsdpOptions block_gather_options(bool fp8) {
  FsdpOptions options;
  options.fp8_all_gather = fp8;
  options.fp8_scaling = Fp8WeightScaling::Block128x128;
  return options;
}

void expect_same_blocked(const ops::Fp8Blocked& a, const ops::Fp8Blocked& b, const std::string& what) {
  expect_same_bytes(a.codes, b.codes, what + " codes");
  expect_same_bytes(a.scale_inv, b.scale_inv, what + " scale_inv");
  EXPECT_EQ(a.block_rows, b.block_rows) << what;
  EXPECT_EQ(a.block_cols, b.block_cols) << what;
}

/// The 128x128 blocks of unit `unit`'s FP8 matrices that a shard boundary cuts (not at a block row's start).
int64_t blocks_cut_by_shards(models::UnitStore& store, size_t unit) {
  const models::UnitShard& shard = store.units()[unit].shard;
  int64_t cut = 0;
  for (const models::Fp8Operand& op : store.fp8_operands(unit)) {
    for (int r = 1; r < shard.world; ++r) {
      const int64_t at = shard.shard_numel * r - op.offset;
      cut += at > 0 && at < op.numel() && at % (128 * op.cols) != 0 ? 1 : 0;
    }
  }
  return cut;
}

class Fp8BlockGather : public ::testing::TestWithParam<models::Architecture> {};

TEST_P(Fp8BlockGather, CachesAreThoseOfOneProcess) {
  const ContextPtr ctx = ops::make_context(Device::cpu());
  const auto comm = make_communicator(test::world(), Device::cpu());
  const models::ModelConfig config = block_model(GetParam());
  models::Transformer one = make_model(ctx, config, std::nullopt, models::RecipeKind::FP8Block);
  for (const int64_t align : {128, 1}) {
    models::Transformer sharded =
        make_model(ctx, config, models::ShardSpec{comm->rank(), comm->world_size(), align},
                   models::RecipeKind::FP8Block);
    FsdpUnits fsdp(sharded.store(), *comm, block_gather_options(true));
    for (uint64_t seed : {3u, 11u}) {  // the second init is new weights: the block scales are made again
      one.init(seed);
      sharded.init(seed);
      check_gathered_units(
          one, sharded, fsdp,
          [&](size_t k, const models::Fp8Operand& ours, const models::Fp8Operand& theirs) {
            const nn::Fp8BlockWeight& a = sharded.store().fp8_block_weights(k).get(*ours.key);
            const nn::Fp8BlockWeight& b = one.store().fp8_block_weights(k).get(*theirs.key);
            const std::string name = ours.key->name + " (alignment " + std::to_string(align) + ")";
            expect_same_blocked(a.w, b.w, name + " W");
            expect_same_blocked(a.w_t, b.w_t, name + " W^T");
          });
    }
    EXPECT_EQ(sharded.store().fp8_block_quantizations(), 0)
        << "the gathered codes fill the cache; nothing is quantised again";
    int64_t cut = 0;
    for (size_t k = 0; k < sharded.store().units().size(); ++k)
      cut += sharded.store().units()[k].fp8_linears ? blocks_cut_by_shards(sharded.store(), k) : 0;
    if (comm->world_size() > 1) {
      EXPECT_GT(cut, 0) << "no shard boundary inside a block: the test shows nothing";
    }
  }
}

// The bytes a rank receives gathering every FP8 block once: E4M3 codes (1 byte an element) and the BF16
// vectors, against 2 bytes an element gathering the BF16 units; no scale is gathered (each rank makes them
// from the reduced block maxima).
TEST(Fp8BlockGatherBytes, HalfOfBf16) {
  const auto comm = make_communicator(test::world(), Device::cpu());
  if (comm->world_size() == 1) GTEST_SKIP() << "one process gathers nothing";
  const ContextPtr ctx = ops::make_context(Device::cpu());
  models::Transformer model =
      make_model(ctx, block_model(models::Architecture::Llama),
                 models::ShardSpec{comm->rank(), comm->world_size(), 128}, models::RecipeKind::FP8Block);
  model.init(7);
  FsdpUnits codes(model.store(), *comm, block_gather_options(true));
  FsdpUnits bf16(model.store(), *comm, block_gather_options(false));
  int64_t expected_codes = 0, expected_bf16 = 0;
  for (size_t k = 0; k < model.store().units().size(); ++k) {
    const models::ParamUnit& u = model.store().units()[k];
    if (!u.fp8_linears) continue;
    for (FsdpUnits* f : {&codes, &bf16}) {
      f->before_forward(k);
      f->after_forward(k);
    }
    const int64_t others = u.shard.padded_numel() - u.shard.shard_numel;
    int64_t vectors = 0;
    for (size_t index : u.loose) vectors += shape_numel(model.store().param_shape(k, index));
    expected_codes += others + 2 * vectors * (comm->world_size() - 1);
    expected_bf16 += 2 * others;
  }
  EXPECT_EQ(codes.bytes_gathered(), expected_codes) << "E4M3 codes and BF16 vectors from the other ranks";
  EXPECT_EQ(bf16.bytes_gathered(), expected_bf16);
  const double ratio =
      static_cast<double>(codes.bytes_gathered()) / static_cast<double>(bf16.bytes_gathered());
  std::printf("%sfp8_block gather: %lld bytes against %lld in BF16 (%.4f)\n",
              test::world().log_prefix().c_str(), static_cast<long long>(codes.bytes_gathered()),
              static_cast<long long>(bf16.bytes_gathered()), ratio);
  EXPECT_LT(ratio, 0.51);
}

INSTANTIATE_TEST_SUITE_P(Architectures, Fp8BlockGather,
                         ::testing::Values(models::Architecture::Llama, models::Architecture::Olmo),
                         [](const auto& info) {
                           return info.param == models::Architecture::Llama ? "Llama" : "Olmo";
                         });

}  // namespace
}  // namespace coat::dist
