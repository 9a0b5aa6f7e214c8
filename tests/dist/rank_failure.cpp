// A program for the failure-path test (check_rank_failure.sh): rank 1 throws while the other ranks wait in a
// barrier that rank 1 will never reach; main's catch must end them all through ProcessGroup::abort.
#include <spdlog/spdlog.h>

#include "coat/dist/process_group.h"

int main() {
  coat::dist::ProcessGroup world = coat::dist::ProcessGroup::from_environment();
  coat::dist::set_rank_log_prefix(world);
  try {
    if (world.rank() == 1) throw coat::Error("deliberate failure on one rank");
    world.barrier();  // waits forever unless the failing rank ends the job
    spdlog::info("barrier passed: the failing rank did not stop the others");
    return 0;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    world.abort(3);
    return 3;
  }
}
