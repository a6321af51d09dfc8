// Faults the pager cannot serve must never leave a VM hanging unnoticed: the
// session turns failed with the reason, the pager counts it, and on request
// the VMM is killed. The VMM here is a child process (it really blocks).
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <thread>

#include "common/unix_socket.h"
#include "support/child_vmm.h"
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
  // The pager notices (pidfd) and ends the session on its own; it stays
  // listed, closed, until it is closed through the API.
  EXPECT_TRUE(WaitFor([&] { return SessionState("exits") == "closed"; })) << pager_->Log();
  EXPECT_NE(Session("exits").value("reason", "").find("exited"), std::string::npos) << Session("exits").dump();
  // Its thread lets go of the uffd right after it says so.
  EXPECT_TRUE(WaitFor([&] { return pager_->CountUserfaultfds() == 0; })) << pager_->CountUserfaultfds();
  EXPECT_EQ(pager_->client().Health()->active_sessions, 0u);
  ASSERT_TRUE(pager_->client().CloseSession("exits").ok());
  EXPECT_TRUE(pager_->client().ListSessions()->empty());
}

// A VMM whose memory does not behave as its handshake promised makes a page
// the pager installed fault again and again. The pager must fail the session
// (and kill the VMM when asked), not answer each fault with a wake forever.
class PagerBrokenPromiseTest : public PagerFixture {
 protected:
  // Waits until session `id` failed for a refault loop at `page`, and checks
  // that it stopped within a bounded number of faults.
  void ExpectFailedForLoopAt(const std::string& id, uint64_t page) {
    ASSERT_TRUE(WaitFor([&] { return SessionState(id) == "failed"; })) << "still " << Session(id).dump() << "\n"
                                                                       << pager_->Log();
    auto s = Session(id);
    std::string reason = s.value("reason", "");
    EXPECT_NE(reason.find("faulted again"), std::string::npos) << reason;
    EXPECT_NE(reason.find(fmt::format("{:#x}", page)), std::string::npos) << reason;
    EXPECT_LE(s["counters"]["faults"].get<uint64_t>(), 64u) << s.dump();
    EXPECT_EQ(Stat("failed_sessions"), 1u);
  }
};

TEST_F(PagerBrokenPromiseTest, SmallPagesClaimedAsHugePagesFailTheSessionAndKillTheVmm) {
  StartPager();
  std::string snap = MakeSnapshot("mem", 4 * kMiB, 36);
  std::string sock = CreateSession("liar", snap, "", /*kill_client_on_failure=*/true);
  // 4 KiB pages, claimed as 2 MiB ones.
  ChildVmmOptions options{.regions = {4 * kMiB}, .snapshot_path = snap};
  options.handshake.claimed_page_size = 2 * kMiB;
  auto vmm = ChildVmm::Start(sock, options);
  ASSERT_TRUE(vmm.ok()) << vmm.status().ToString();
  // The first touch brings in the whole "page" of 2 MiB.
  ASSERT_TRUE((*vmm)->Verify(0).ok());
  // A balloon takes one small page in its middle: the pager forgets the
  // whole huge page it believes in, cannot install it again over the small
  // pages still there, and the discarded one faults forever.
  ASSERT_TRUE((*vmm)->Discard(8 * 4096, 4096).ok());
  ASSERT_TRUE((*vmm)->StartVerify(8 * 4096).ok());
  int status = 0;
  ASSERT_TRUE((*vmm)->WaitForExit(std::chrono::seconds(10), &status)) << Session("liar").dump() << "\n"
                                                                      << pager_->Log();
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  ExpectFailedForLoopAt("liar", (*vmm)->region_base());
}

TEST_F(PagerBrokenPromiseTest, MemoryDiscardedWithoutARemoveEventFailsTheSession) {
  StartPager();
  std::string snap = MakeSnapshot("mem", 8 * kMiB, 37);
  std::string sock = CreateSession("no-remove", snap);
  ChildVmmOptions options{.regions = {8 * kMiB}, .snapshot_path = snap};
  options.handshake.uffd_features = 0;  // no UFFD_FEATURE_EVENT_REMOVE
  auto vmm = ChildVmm::Start(sock, options);
  ASSERT_TRUE(vmm.ok()) << vmm.status().ToString();
  ASSERT_TRUE((*vmm)->Verify(0).ok());
  // The pager saw at the handshake that discards will not be announced.
  auto s = Session("no-remove");
  EXPECT_NE(s.value("warning", "").find("UFFD_FEATURE_EVENT_REMOVE"), std::string::npos) << s.dump();
  EXPECT_NE(pager_->Log().find("UFFD_FEATURE_EVENT_REMOVE"), std::string::npos);
  // Discarded without a word, and touched again.
  ASSERT_TRUE((*vmm)->Discard(0, 4096).ok());
  ASSERT_TRUE((*vmm)->StartVerify(0).ok());
  ExpectFailedForLoopAt("no-remove", (*vmm)->region_base());
  // Not asked to kill: the VMM is left blocked on that page, the pager idle.
  EXPECT_TRUE((*vmm)->Running());
  EXPECT_EQ(SessionState("no-remove"), "failed");
}

// Once a page is found looping it stays blocked for every thread on it: a
// second thread blocked there must not get a wake (which wakes both), or the
// loop, the failure and its log line come back over and over at full CPU.
TEST_F(PagerBrokenPromiseTest, ALoopingPageStaysBlockedForEveryThreadOnIt) {
  StartPager();
  std::string snap = MakeSnapshot("mem", 8 * kMiB, 38);
  std::string sock = CreateSession("two-threads", snap);
  // The VMM, in a process of its own: its two threads stay blocked.
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    VmmHandshakeOptions options;
    options.uffd_features = 0;  // discards go unannounced
    auto vm = VmmStandIn::Restore(sock, {8 * kMiB}, 4096, options);
    if (!vm.ok()) ::_exit(1);
    volatile uint8_t* page = (*vm)->memory.AtFileOffset(0);
    (void)page[0];
    if (::madvise(const_cast<uint8_t*>(page), 4096, MADV_DONTNEED) != 0) ::_exit(2);
    std::thread a([&] { (void)page[0]; }), b([&] { (void)page[0]; });
    a.join();
    b.join();
    ::_exit(0);
  }
  auto faults = [&] { return Session("two-threads")["counters"].value("faults", uint64_t{0}); };
  bool failed = WaitFor([&] { return SessionState("two-threads") == "failed"; });
  uint64_t at_failure = failed ? faults() : 0;
  // Watched for a second (a spinning pager reads thousands of faults in it).
  bool spinning = failed && WaitFor([&] { return faults() > at_failure + 32; }, std::chrono::seconds(1));
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ASSERT_TRUE(failed) << Session("two-threads").dump() << "\n" << pager_->Log();
  EXPECT_NE(Session("two-threads").value("reason", "").find("faulted again"), std::string::npos)
      << Session("two-threads").dump();
  EXPECT_FALSE(spinning) << "faults went on after the loop was found: " << Session("two-threads").dump();
  EXPECT_EQ(Stat("failed_sessions"), 1u);
}

// close means the caller is done with the VM: nothing will serve its next
// fault, so a VMM that asked for it is killed rather than left to hang.
TEST_F(PagerFaultFailureTest, ClosingAServingSessionKillsItsVmmWhenAsked) {
  StartPager();
  std::string snap = MakeSnapshot("mem", 8 * kMiB, 38);
  auto killed = ChildVmm::Start(CreateSession("kill", snap, "", /*kill_client_on_failure=*/true),
                                {.regions = {8 * kMiB}, .snapshot_path = snap});
  ASSERT_TRUE(killed.ok()) << killed.status().ToString();
  auto kept = ChildVmm::Start(CreateSession("keep", snap), {.regions = {8 * kMiB}, .snapshot_path = snap});
  ASSERT_TRUE(kept.ok()) << kept.status().ToString();
  ASSERT_TRUE((*killed)->Verify(0).ok());
  ASSERT_TRUE((*kept)->Verify(0).ok());

  ASSERT_TRUE(pager_->client().CloseSession("kill").ok());
  int status = 0;
  ASSERT_TRUE((*killed)->WaitForExit(std::chrono::seconds(10), &status)) << "the VMM was not killed\n" << pager_->Log();
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;

  // Without the flag the VMM is left alone, and the log says what that means.
  ASSERT_TRUE(pager_->client().CloseSession("keep").ok());
  EXPECT_TRUE((*kept)->Running());
  EXPECT_NE(pager_->Log().find("will hang"), std::string::npos) << pager_->Log();
}

}  // namespace
}  // namespace uffdpager::testing::fault_failure_test
