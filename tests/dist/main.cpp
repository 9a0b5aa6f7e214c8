// The dist tests' main: owns the world ProcessGroup, lets only rank 0 print gtest's report (other ranks
// print their failures, prefixed with their rank), and makes every rank exit non-zero when any rank failed,
// so that mpirun's exit status says whether the suite passed.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "dist_test_world.h"

namespace {

// Set once by main before any test runs; the tests reach it through coat::test::world().
coat::dist::ProcessGroup* the_world = nullptr;

// For ranks other than 0: silent except for failures, so that the report is read once, not world times.
class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(std::string prefix) : prefix_(std::move(prefix)) {}

  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "%s%s:%d: Failure\n%s\n", prefix_.c_str(),
                 result.file_name() != nullptr ? result.file_name() : "?", result.line_number(),
                 result.message());
  }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result()->Failed())
      std::fprintf(stderr, "%s[  FAILED  ] %s.%s\n", prefix_.c_str(), info.test_suite_name(), info.name());
  }

 private:
  std::string prefix_;
};

}  // namespace

coat::dist::ProcessGroup& coat::test::world() {
  return *the_world;
}

int main(int argc, char** argv) {
  coat::dist::ProcessGroup world = coat::dist::ProcessGroup::from_environment();
  the_world = &world;
  coat::dist::set_rank_log_prefix(world);
  ::testing::InitGoogleTest(&argc, argv);
  if (world.rank() != 0) {
    ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailurePrinter(world.log_prefix()));
  }
  const int failed_here = RUN_ALL_TESTS() != 0 ? 1 : 0;
  int failed_anywhere = failed_here;
  if (world.uses_mpi()) {
    MPI_Allreduce(&failed_here, &failed_anywhere, 1, MPI_INT, MPI_MAX, world.mpi_comm());
  }
  if (world.rank() == 0 && failed_anywhere && !failed_here) {
    std::fprintf(stderr, "tests failed on another rank (see the [rank r] lines above)\n");
  }
  return failed_anywhere;
}
