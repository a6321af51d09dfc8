// pager.pid: a second pager refuses to start only while the pager named
// there is alive (same pid and same start time). A stale file — its process
// gone or a zombie, or an unrelated process that reused the pid — is
// replaced; a pager removes the file on exit only if it still names it.
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/child_process.h"
#include "common/process_identity.h"
#include "support/pager_fixture.h"

namespace uffdpager::testing::pid_file_test {
namespace {

using namespace std::chrono_literals;

// The state letter of /proc/PID/stat ('Z' for a zombie), '?' if unreadable.
char ProcState(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  size_t close = text.rfind(')');
  return close == std::string::npos || close + 2 >= text.size() ? '?' : text[close + 2];
}

class PagerPidFileTest : public PagerFixture {
 protected:
  std::string PidPath() const { return dir_ / "uffd/test/pager.pid"; }

  void WritePidFile(const std::string& text) {
    std::filesystem::create_directories(dir_ / "uffd/test");
    std::ofstream(PidPath()) << text;
  }

  std::string ReadPidFile() const {
    std::ifstream in(PidPath());
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  // The pid file names `pid`: alone on the first line, then its start time.
  void ExpectPidFileNames(pid_t pid) {
    auto id = IdentifyProcess(pid);
    ASSERT_TRUE(id.ok()) << id.status().ToString();
    EXPECT_EQ(ReadPidFile(), std::to_string(pid) + "\nstart_time=" + std::to_string(id->start_time) + "\n");
    std::ifstream in(PidPath());
    pid_t first = 0;
    in >> first;  // how scripts and the other tests read it
    EXPECT_EQ(first, pid);
  }

  // Runs another uffd-pager on the same directory, which must exit 5 (not
  // TestPager::Start: the running pager's /health would pass for it); its
  // log in *log.
  bool SecondPagerExits(std::string* log) {
    const std::string log_path = dir_ / "second.log";
    auto child = ChildProcess::Spawn({UFFD_PAGER_BIN, "--data-dir", dir_.path(), "--version-key", "test"}, log_path);
    EXPECT_TRUE(child.ok()) << child.status().ToString();
    if (!child.ok()) return false;
    int status = 0;
    bool exited = child->WaitForExit(std::chrono::milliseconds(10s), &status);
    std::ifstream in(log_path);
    std::stringstream ss;
    ss << in.rdbuf();
    *log = ss.str();
    // Exit code 5 (the shared table's "it exists already"): another pager holds the directory.
    return exited && WIFEXITED(status) && WEXITSTATUS(status) == 5;
  }
};

TEST_F(PagerPidFileTest, ALivePagerKeepsASecondOneFromStarting) {
  StartPager();
  ExpectPidFileNames(pager_->pid());
  std::string log;
  EXPECT_TRUE(SecondPagerExits(&log)) << log;
  EXPECT_NE(
      log.find("another uffd-pager (pid " + std::to_string(pager_->pid()) + ") already serves " + pager_->root_dir()),
      std::string::npos)
      << log;
  ExpectPidFileNames(pager_->pid());
  EXPECT_TRUE(pager_->client().Health().ok());
}

TEST_F(PagerPidFileTest, AnOlderPidOnlyFileOfALivePagerStillCounts) {
  StartPager();
  WritePidFile(std::to_string(pager_->pid()) + "\n");
  std::string log;
  EXPECT_TRUE(SecondPagerExits(&log)) << log;
  EXPECT_NE(log.find("already serves"), std::string::npos) << log;
}

TEST_F(PagerPidFileTest, AnUnrelatedProcessThatReusedThePidDoesNotBlockStartUp) {
  // This test process is alive, but it is not the process recorded: that one
  // started at another time.
  auto self = IdentifyProcess(::getpid());
  ASSERT_TRUE(self.ok()) << self.status().ToString();
  WritePidFile(std::to_string(self->pid) + "\nstart_time=" + std::to_string(self->start_time + 1) + "\n");
  StartPager();
  ExpectPidFileNames(pager_->pid());
  EXPECT_NE(pager_->Log().find("is now an unrelated process"), std::string::npos) << pager_->Log();
}

TEST_F(PagerPidFileTest, AnOlderPidOnlyFileNamingAnotherProgramDoesNotBlockStartUp) {
  auto sleeper = ChildProcess::Spawn({"/bin/sleep", "60"}, "");
  ASSERT_TRUE(sleeper.ok()) << sleeper.status().ToString();
  WritePidFile(std::to_string(sleeper->pid()) + "\n");
  StartPager();
  ExpectPidFileNames(pager_->pid());
  EXPECT_NE(pager_->Log().find("is now a process other than uffd-pager"), std::string::npos) << pager_->Log();
}

TEST_F(PagerPidFileTest, APagerKilledAndNotYetReapedDoesNotBlockStartUp) {
  StartPager();
  const pid_t killed = pager_->pid();
  pager_->Kill(SIGKILL);
  // It is our child and nobody reaps it here: a zombie, its pid file left.
  ASSERT_TRUE(WaitFor([&] { return ProcState(killed) == 'Z'; })) << "state " << ProcState(killed);
  ExpectPidFileNames(killed);
  auto second = TestPager::Start(dir_.path());
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  ExpectPidFileNames((*second)->pid());
  EXPECT_NE((*second)->Log().find("a zombie"), std::string::npos) << (*second)->Log();
  EXPECT_EQ(ProcState(killed), 'Z') << "the check must not have needed the zombie gone";
}

TEST_F(PagerPidFileTest, APagerRemovesOnlyAPidFileThatStillNamesIt) {
  StartPager();
  pager_->Kill(SIGTERM);
  ASSERT_TRUE(pager_->WaitForExit(10s));
  EXPECT_FALSE(std::filesystem::exists(PidPath())) << ReadPidFile();

  // A pid file that names someone else by the time the pager exits stays.
  StartPager();
  auto self = IdentifyProcess(::getpid());
  ASSERT_TRUE(self.ok());
  const std::string other = std::to_string(self->pid) + "\nstart_time=" + std::to_string(self->start_time) + "\n";
  WritePidFile(other);
  pager_->Kill(SIGTERM);
  ASSERT_TRUE(pager_->WaitForExit(10s));
  EXPECT_EQ(ReadPidFile(), other);
  // No temporary was left beside it either.
  for (const auto& entry : std::filesystem::directory_iterator(dir_ / "uffd/test")) {
    EXPECT_EQ(entry.path().filename().string().find("pager.pid."), std::string::npos) << entry.path();
  }
}

}  // namespace
}  // namespace uffdpager::testing::pid_file_test
