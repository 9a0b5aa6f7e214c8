// The window sampler: a permutation per epoch, different orders per epoch/seed, exact resume, splits.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "coat/core/error.h"
#include "coat/data/window_sampler.h"

namespace coat::data {
namespace {

TEST(WindowSampler, EachEpochIsAPermutation) {
  for (uint64_t tokens : {2ull * 16 + 1, 1000ull * 16 + 5, 4097ull * 16 + 1}) {
    WindowSampler s(tokens, 16, 99, 0.0);
    const uint64_t n = s.train_windows();
    std::vector<uint64_t> first = s.next(n), second = s.next(n);
    EXPECT_EQ(s.state().epoch, 1u);
    for (auto* order : {&first, &second}) {
      std::vector<uint64_t> sorted = *order;
      std::sort(sorted.begin(), sorted.end());
      for (uint64_t i = 0; i < n; ++i) ASSERT_EQ(sorted[i], i);
    }
    if (n > 100) {
      EXPECT_NE(first, second);
    }
  }
}

TEST(WindowSampler, SeedsDifferAndResumeIsExact) {
  WindowSampler a(100000, 64, 1, 0.1), b(100000, 64, 2, 0.1);
  EXPECT_NE(a.next(50), b.next(50));
  WindowSampler c(100000, 64, 1, 0.1);
  c.next(1000);  // crosses an epoch boundary
  const SamplerState saved = c.state();
  const std::vector<uint64_t> expected = c.next(300);
  WindowSampler d(100000, 64, 1, 0.1);
  d.set_state(saved);
  EXPECT_EQ(d.next(300), expected);
}

TEST(WindowSampler, ValidationSplitIsHeldOut) {
  WindowSampler s(10 * 128 + 1, 128, 5, 0.2);
  EXPECT_EQ(s.train_windows(), 8u);
  EXPECT_EQ(s.validation_windows(), 2u);
  std::set<uint64_t> train;
  for (uint64_t w : s.next(8)) train.insert(w);
  // Validation windows are spread over the data: the last of each block of 5 windows.
  EXPECT_EQ(s.validation_window(0), 4u);
  EXPECT_EQ(s.window_start(s.validation_window(1)), 9u * 128);
  // The training windows are exactly the others, each once per epoch.
  EXPECT_EQ(train, (std::set<uint64_t>{0, 1, 2, 3, 5, 6, 7, 8}));
  // Uneven split: 23 windows, 3 held out every 7th; training covers the remaining 20 exactly once.
  WindowSampler u(23 * 16 + 1, 16, 9, 0.14);
  ASSERT_EQ(u.validation_windows(), 3u);
  std::set<uint64_t> all;
  for (uint64_t w : u.next(u.train_windows())) all.insert(w);
  for (uint64_t k = 0; k < 3; ++k) {
    EXPECT_EQ(u.validation_window(k), 7 * k + 6);
    all.insert(u.validation_window(k));
  }
  EXPECT_EQ(all.size(), 23u);
  EXPECT_EQ(*all.rbegin(), 22u);
}

TEST(WindowSampler, ClearErrors) {
  EXPECT_THROW(WindowSampler(10, 16, 0, 0.0), InvalidArgument);
  EXPECT_THROW(WindowSampler(1000, 16, 0, 1.0), InvalidArgument);
  WindowSampler s(1000, 16, 0, 0.0);
  EXPECT_THROW(s.set_state({0, 1000}), InvalidArgument);
}

}  // namespace
}  // namespace coat::data
