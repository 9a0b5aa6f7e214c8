// The run directory's advisory lock: one holder at a time, the holder's PID and host in the refusal, and the
// kernel's release when the holder dies however it dies (a child killed with SIGKILL).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "coat/io/directory_lock.h"
#include "expect_error.h"

namespace coat::io {
namespace {

namespace fs = std::filesystem;

std::string host_name() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return host;
}

class DirectoryLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("coat_lock_" + std::to_string(getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(DirectoryLockTest, SecondHolderIsRefusedWithTheFirstsPidAndHost) {
  DirectoryLock first = DirectoryLock::acquire(dir_);
  EXPECT_TRUE(first.held());
  const std::string holder = "pid " + std::to_string(getpid()) + " on host " + host_name() + " since ";
  try {
    DirectoryLock::acquire(dir_);
    FAIL() << "a second lock was granted";
  } catch (const DirectoryLocked& e) {
    EXPECT_EQ(e.holder().rfind(holder, 0), 0u) << e.holder();
    EXPECT_NE(std::string(e.what()).find("is in use: locked by " + holder), std::string::npos) << e.what();
  }
  first = DirectoryLock();  // released
  EXPECT_TRUE(DirectoryLock::acquire(dir_).held());
}

TEST_F(DirectoryLockTest, KilledHolderLeavesNoStaleLock) {
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    DirectoryLock lock = DirectoryLock::acquire(dir_);
    const char c = 'x';
    (void)!write(ready[1], &c, 1);
    pause();  // until SIGKILL: no destructor, no cleanup
    _exit(0);
  }
  char c = 0;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  test::expect_error_containing<DirectoryLocked>([&] { DirectoryLock::acquire(dir_); },
                                                 "locked by pid " + std::to_string(child) + " on host ");
  kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(DirectoryLock::acquire(dir_).held());
  close(ready[0]);
  close(ready[1]);
}

TEST_F(DirectoryLockTest, MissingDirectoryNamesTheFile) {
  test::expect_error_containing<IoError>(
      [&] { DirectoryLock::acquire(dir_ / "missing"); },
      "cannot open lock file '" + (dir_ / "missing" / "run.lock").string() + "': No such file or directory");
}

}  // namespace
}  // namespace coat::io
