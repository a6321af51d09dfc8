// Faults the pager cannot serve must never leave a VM hanging unnoticed: the
// session turns failed with the reason, the pager counts it, and on request
// the VMM is killed. The VMM here is a child process (it really blocks).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/unix_socket.h"
#include "support/pager_fixture.h"

namespace uffdpager::testing::fault_failure_test {
namespace {

constexpr uint64_t kMiB = 1ULL << 20;

// A child process acting as the VMM: restores through `socket_path`, touches
// `first_offset`, reports on `ready_fd`, waits for a byte on `go_fd`, then
// touches `second_offset` (which the test arranges to be unservable).
// `declared_bytes` < the registered size makes part of the registered memory
// unknown to the pager.
pid_t StartChildVmm(const std::string& socket_path, uint64_t first_offset, uint64_t second_offset,
                    uint64_t declared_bytes, int ready_fd, int go_fd) {
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  auto memory = GuestMemory::Allocate({8 * kMiB}, 4096);
  if (!memory.ok()) ::_exit(10);
  auto uffd = Userfaultfd::Create(O_CLOEXEC | O_NONBLOCK);
  if (!uffd.ok() || !uffd->NegotiateApi(UFFD_FEATURE_EVENT_REMOVE).ok()) ::_exit(11);
  if (!uffd->RegisterMissing(memory->Mappings()[0].base_host_virt_addr, 8 * kMiB).ok()) ::_exit(12);
  auto mappings = memory->Mappings();
  mappings[0].size = declared_bytes;
  auto conn = ConnectUnixSocket(socket_path);
  int fds[] = {uffd->fd()};
  if (!conn.ok() || !SendWithFds(conn->get(), SerializeHandshake(mappings, HandshakeDialect::kV1_12), fds).ok()) {
    ::_exit(13);
  }
  (void)*reinterpret_cast<volatile uint8_t*>(memory->AtFileOffset(first_offset));
  char b = 'r';
  (void)!::write(ready_fd, &b, 1);
  (void)!::read(go_fd, &b, 1);
  (void)*reinterpret_cast<volatile uint8_t*>(memory->AtFileOffset(second_offset));
  ::_exit(0);  // only reached if the second fault was served after all
}

class PagerFaultFailureTest : public PagerFixture {
 protected:
  void TearDown() override {
    if (child_ > 0) {
      ::kill(child_, SIGKILL);
      ::waitpid(child_, nullptr, 0);
    }
  }

  // Runs the child to its second touch and returns once it is blocked there.
  void RunChildToSecondFault(const std::string& sock, uint64_t declared, std::function<void()> before_second) {
    int ready[2], go[2];
    ASSERT_EQ(::pipe(ready), 0);
    ASSERT_EQ(::pipe(go), 0);
    child_ = StartChildVmm(sock, 0, 8 * kMiB - 4096, declared, ready[1], go[0]);
    char b;
    struct timeval tv {
      10, 0
    };
    ASSERT_EQ(::read(ready[0], &b, 1), 1) << "child VMM did not get its first page";
    (void)tv;
    before_second();
    ASSERT_EQ(::write(go[1], "g", 1), 1);
    for (int fd : {ready[0], ready[1], go[0], go[1]}) ::close(fd);
  }

  pid_t child_ = -1;
};

TEST_F(PagerFaultFailureTest, ABackingReadErrorFailsTheSessionLoudly) {
  StartPager();
  std::string snap = MakeSnapshot("mem", 8 * kMiB, 31);
  std::string sock = CreateSession("trunc", snap);
  RunChildToSecondFault(sock, 8 * kMiB, [&] { ASSERT_EQ(::truncate(snap.c_str(), 4096), 0); });
  ASSERT_TRUE(WaitFor([&] { return SessionState("trunc") == "failed"; })) << Session("trunc").dump();
  auto s = Session("trunc");
  EXPECT_NE(s.value("reason", "").find("truncated"), std::string::npos) << s.dump();
  EXPECT_EQ(s["counters"]["unservable_faults"], 1);
  EXPECT_EQ(Stat("failed_sessions"), 1u);
  EXPECT_NE(pager_->Log().find("FAILED"), std::string::npos);
  // The VMM is still there, stuck on that page: failing did not pretend.
  EXPECT_EQ(::waitpid(child_, nullptr, WNOHANG), 0);
}

TEST_F(PagerFaultFailureTest, KillClientOnFailureKillsTheVmm) {
  StartPager();
  std::string snap = MakeSnapshot("mem", 8 * kMiB, 32);
  std::string sock = CreateSession("killme", snap, "", /*kill_client_on_failure=*/true);
  RunChildToSecondFault(sock, 8 * kMiB, [&] { ASSERT_EQ(::truncate(snap.c_str(), 4096), 0); });
  int status = 0;
  ASSERT_TRUE(WaitFor([&] { return ::waitpid(child_, &status, WNOHANG) == child_; })) << "the VMM was not killed";
  child_ = -1;
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  EXPECT_EQ(SessionState("killme"), "failed");
}

TEST_F(PagerFaultFailureTest, AFaultOutsideEveryRegionFailsTheSession) {
  StartPager();
  std::string snap = MakeSnapshot("mem", 8 * kMiB, 33);
  std::string sock = CreateSession("outside", snap);
  // The VMM registers 8 MiB but tells the pager about only the first 4 MiB.
  RunChildToSecondFault(sock, 4 * kMiB, [] {});
  ASSERT_TRUE(WaitFor([&] { return SessionState("outside") == "failed"; })) << Session("outside").dump();
  EXPECT_NE(Session("outside").value("reason", "").find("outside every registered region"), std::string::npos);
  EXPECT_EQ(::waitpid(child_, nullptr, WNOHANG), 0);
}

TEST_F(PagerFaultFailureTest, TheSessionEndsWhenTheVmmExits) {
  StartPager();
  std::string snap = MakeSnapshot("mem", 8 * kMiB, 34);
  std::string sock = CreateSession("exits", snap);
  RunChildToSecondFault(sock, 8 * kMiB, [] {});
  int status = 0;
  ASSERT_TRUE(WaitFor([&] { return ::waitpid(child_, &status, WNOHANG) == child_; }));
  child_ = -1;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  // The pager notices (pidfd) and drops the session on its own.
  EXPECT_TRUE(WaitFor([&] {
    auto list = pager_->client().ListSessions();
    return list.ok() && list->empty();
  })) << pager_->Log();
  EXPECT_EQ(pager_->CountUserfaultfds(), 0u);
}

}  // namespace
}  // namespace uffdpager::testing::fault_failure_test
