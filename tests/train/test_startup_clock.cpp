// The start-up clock: the process's age read from /proc, phases closed by marks, and the summary the
// trainer logs at its first step.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "coat/train/startup_clock.h"

namespace coat::train {
namespace {

TEST(StartupClock, TheProcessAgeIsPositiveAndGrows) {
  const double first = process_age_s();
  ASSERT_GT(first, 0.0) << "/proc/self/stat or /proc/uptime unreadable";
  EXPECT_LT(first, 24 * 3600.0) << "a test process older than a day: the start time field is misread";
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_GE(process_age_s(), first + 0.03);  // /proc counts in 10 ms ticks
}

TEST(StartupClock, MarksCloseThePhasesInOrder) {
  StartupClock clock("before");
  ASSERT_EQ(clock.phases().size(), 1u);
  EXPECT_EQ(clock.phases()[0].first, "before");
  EXPECT_GT(clock.phases()[0].second, 0.0);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  clock.mark("sleep");
  clock.mark("nothing");
  ASSERT_EQ(clock.phases().size(), 3u);
  EXPECT_GE(clock.phases()[1].second, 0.03);
  EXPECT_LT(clock.phases()[2].second, clock.phases()[1].second);
  double sum = 0.0;
  for (const auto& [name, seconds] : clock.phases()) sum += seconds;
  EXPECT_GE(clock.elapsed_s(), sum - 1e-6);
  const std::string s = clock.summary();
  EXPECT_NE(s.find("before "), std::string::npos) << s;
  EXPECT_NE(s.find(", sleep 0.0"), std::string::npos) << s;
  EXPECT_NE(s.find(", nothing 0.00 s"), std::string::npos) << s;
}

}  // namespace
}  // namespace coat::train
