// Tensor handles, views, dtypes, devices and memory accounting (CPU only: no kernels involved).
#include <gtest/gtest.h>

#include <numeric>

#include "coat/core/tensor.h"

namespace coat {
namespace {

ContextPtr cpu() { return std::make_shared<CpuContext>(); }

// A contiguous F32 tensor holding 0, 1, 2, ... written through the raw pointer.
Tensor iota(const ContextPtr& ctx, const Shape& shape) {
  Tensor t = Tensor::empty(ctx, shape, DType::F32);
  std::iota(t.data<float>(), t.data<float>() + t.numel(), 0.0f);
  return t;
}

float at(const Tensor& t, const std::vector<int64_t>& index) {
  int64_t offset = 0;
  for (size_t d = 0; d < index.size(); ++d) offset += index[d] * t.stride(static_cast<int64_t>(d));
  return t.data<float>()[offset];
}

TEST(DType, SizesAndNames) {
  EXPECT_EQ(dtype_size(DType::F64), 8u);
  EXPECT_EQ(dtype_size(DType::BF16), 2u);
  EXPECT_EQ(dtype_size(DType::E4M3), 1u);
  EXPECT_EQ(dtype_size(DType::U32), 4u);
  for (DType t : kAllDTypes) EXPECT_EQ(dtype_from_name(dtype_name(t)), t);
  EXPECT_EQ(dtype_from_name("bfloat16"), DType::BF16);
  EXPECT_EQ(dtype_from_name("FP8_E5M2"), DType::E5M2);
  EXPECT_TRUE(is_fp8(DType::E4M3));
  EXPECT_FALSE(is_floating(DType::U16));
}

TEST(DType, UnknownNameListsValidOnes) {
  try {
    dtype_from_name("bf17");
    FAIL() << "no exception";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("'bf17'"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("bf16"), std::string::npos);
  }
}

TEST(Device, ParseAndPrint) {
  EXPECT_EQ(Device::parse("cpu"), Device::cpu());
  EXPECT_EQ(Device::parse("cuda"), Device::cuda(0));
  EXPECT_EQ(Device::parse("cuda:3"), Device::cuda(3));
  EXPECT_EQ(Device::cuda(2).str(), "cuda:2");
  EXPECT_THROW(Device::parse("cuda:x"), InvalidArgument);
  EXPECT_THROW(Device::parse("gpu"), InvalidArgument);
  EXPECT_THROW(Device::parse("cuda:-1"), InvalidArgument);
}

TEST(Tensor, EmptyHasShapeStridesAndBytes) {
  Tensor t = Tensor::empty(cpu(), {2, 3, 4}, DType::BF16);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.nbytes(), 48u);
  EXPECT_EQ(t.strides(), Shape({12, 4, 1}));
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.device(), Device::cpu());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data_ptr()) % 256, 0u);
  EXPECT_EQ(t.str(), "Tensor(shape=(2,3,4), dtype=bf16, device=cpu)");
  EXPECT_THROW(Tensor::empty(cpu(), {2, -1}, DType::F32), InvalidArgument);
}

TEST(Tensor, SliceSelectAndStep) {
  Tensor t = iota(cpu(), {4, 6});
  Tensor s = t.slice(1, 1, 5, 2);  // columns 1 and 3
  EXPECT_EQ(s.shape(), Shape({4, 2}));
  EXPECT_FALSE(s.is_contiguous());
  EXPECT_EQ(at(s, {2, 1}), 2 * 6 + 3);
  Tensor r = t.select(0, -1);  // last row
  EXPECT_EQ(r.shape(), Shape({6}));
  EXPECT_EQ(at(r, {4}), 3 * 6 + 4);
  EXPECT_TRUE(r.shares_storage_with(t));
  Tensor tail = t.slice(0, -2, 100);
  EXPECT_EQ(tail.size(0), 2);
  EXPECT_THROW(t.select(0, 4), InvalidArgument);
  EXPECT_THROW(t.slice(2, 0, 1), InvalidArgument);
}

TEST(Tensor, TransposeAndPermuteAreStrideViews) {
  Tensor t = iota(cpu(), {2, 3, 4});
  Tensor tr = t.transpose(0, 2);
  EXPECT_EQ(tr.shape(), Shape({4, 3, 2}));
  EXPECT_EQ(at(tr, {3, 1, 1}), at(t, {1, 1, 3}));
  Tensor p = t.permute({1, 2, 0});
  EXPECT_EQ(p.shape(), Shape({3, 4, 2}));
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 4; ++j)
      for (int64_t k = 0; k < 2; ++k) EXPECT_EQ(at(p, {i, j, k}), at(t, {k, i, j}));
  EXPECT_THROW(t.permute({0, 0, 1}), InvalidArgument);
  EXPECT_THROW(t.permute({0, 1}), InvalidArgument);
}

TEST(Tensor, ReshapeNeedsContiguousData) {
  Tensor t = iota(cpu(), {2, 3, 4});
  Tensor r = t.reshape({6, -1});
  EXPECT_EQ(r.shape(), Shape({6, 4}));
  EXPECT_EQ(at(r, {5, 3}), 23.0f);
  EXPECT_THROW(t.reshape({5, 5}), InvalidArgument);
  EXPECT_THROW(t.reshape({-1, -1}), InvalidArgument);
  try {
    t.transpose(0, 1).reshape({24});
    FAIL() << "no exception";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("not contiguous"), std::string::npos) << e.what();
  }
  // A size-1 dimension does not break contiguity whatever its stride.
  EXPECT_TRUE(t.slice(0, 1, 2).is_contiguous());
}

TEST(Tensor, ViewAsAndItem) {
  Tensor t = Tensor::empty(cpu(), {1}, DType::U8);
  t.data<uint8_t>()[0] = 0x38;  // 1.0 in E4M3
  EXPECT_EQ(t.view_as(DType::E4M3).item(), 1.0);
  EXPECT_THROW(t.view_as(DType::BF16), InvalidArgument);
  EXPECT_THROW(iota(cpu(), {2}).item(), InvalidArgument);
}

TEST(Tensor, FromStorageChecksBounds) {
  Tensor base = iota(cpu(), {10});
  Tensor v = Tensor::from_storage(base.storage(), {2, 2}, DType::F32, 3);
  EXPECT_EQ(at(v, {1, 1}), 6.0f);
  EXPECT_THROW(Tensor::from_storage(base.storage(), {4, 2}, DType::F32, 3), InvalidArgument);
}

TEST(Tensor, ViewsKeepStorageAlive) {
  Tensor view;
  {
    Tensor t = iota(cpu(), {8});
    view = t.slice(0, 4, 8);
  }
  EXPECT_EQ(at(view, {3}), 7.0f);
}

TEST(Memory, CountsByCategoryWithPeaks) {
  auto ctx = cpu();
  const MemoryReport before = ctx->allocator().memory_report();
  EXPECT_EQ(before.total_current_bytes, 0u);
  {
    Tensor w = Tensor::empty(ctx, {1024}, DType::F32, MemoryCategory::Weights);          // 4 KiB
    Tensor m = Tensor::empty(ctx, {1000}, DType::F32, MemoryCategory::OptimizerState);   // rounded to 256
    const MemoryReport r = ctx->allocator().memory_report();
    EXPECT_EQ(r.current(MemoryCategory::Weights), 4096u);
    EXPECT_EQ(r.current(MemoryCategory::OptimizerState), 4096u);
    EXPECT_EQ(r.current(MemoryCategory::Activations), 0u);
    EXPECT_EQ(r.total_current_bytes, 8192u);
  }
  const MemoryReport after = ctx->allocator().memory_report();
  EXPECT_EQ(after.total_current_bytes, 0u);
  EXPECT_EQ(after.peak(MemoryCategory::Weights), 4096u);
  EXPECT_EQ(after.total_peak_bytes, 8192u);
  ctx->allocator().reset_peaks();
  EXPECT_EQ(ctx->allocator().memory_report().total_peak_bytes, 0u);
  EXPECT_NE(after.to_string().find("optimizer_state"), std::string::npos);
}

}  // namespace
}  // namespace coat
