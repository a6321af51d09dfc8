// A session's life from the pager's side: what a session gives back when it
// ends, how many ended ones the pager keeps, how it waits for its VMM when
// other clients connect first, what it does with a second VMM, and how it
// notices that a VMM it holds no pidfd for has exited.
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/unix_socket.h"
#include "support/child_vmm.h"
#include "support/pager_fixture.h"
#include "support/process_footprint.h"

namespace uffdpager::testing::session_life_test {
namespace {

constexpr uint64_t kMiB = 1ULL << 20;
const std::vector<uint64_t> kRegions = {4 * kMiB, 2 * kMiB};

// True once the other end closed `fd` (an unread message makes that a reset);
// false if it is still open after `timeout`.
bool ClosedByPeer(int fd, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return false;
  char c;
  ssize_t n = ::recv(fd, &c, 1, MSG_DONTWAIT | MSG_PEEK);
  return n == 0 || (n < 0 && errno == ECONNRESET);
}

class PagerSessionLifeTest : public PagerFixture {
 protected:
  uint64_t SessionCounter(const std::string& id, const std::string& field) {
    return Session(id).value(field, uint64_t{0});
  }
  std::string snap_;
};

TEST_F(PagerSessionLifeTest, CompletedSessionsGiveBackEveryFdAndThreadAndStayListed) {
  StartPager();
  snap_ = MakeSnapshot("mem", 6 * kMiB, 71);
  ASSERT_TRUE(pager_->client().Health().ok());
  const ProcessFootprint baseline = ProcessFootprint::Of(pager_->pid());
  constexpr int kSessions = 20;
  for (int i = 0; i < kSessions; ++i) {
    std::string id = "c" + std::to_string(i);
    auto vmm = ChildVmm::Start(CreateSession(id, snap_), {.regions = kRegions, .snapshot_path = snap_});
    ASSERT_TRUE(vmm.ok()) << vmm.status().ToString();
    ASSERT_TRUE((*vmm)->Verify(4096 * i).ok());
    Status completed = pager_->client().CompleteSession(id, std::chrono::seconds(60));
    ASSERT_TRUE(completed.ok()) << completed.ToString() << "\n" << pager_->Log();
    // Every page is in: the VMM reads any of them without the pager.
    ASSERT_TRUE((*vmm)->Verify(5 * kMiB + 4096 * i).ok());
    ASSERT_TRUE((*vmm)->Exit().ok());
    ASSERT_TRUE((*vmm)->WaitForExit(std::chrono::seconds(10)));
  }
  auto list = pager_->client().ListSessions();
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(list->size(), size_t{kSessions});
  for (const auto& s : *list) EXPECT_EQ(s["state"], "completed") << s.dump();
  auto health = pager_->client().Health();
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(health->active_sessions, 0u) << "completed sessions hold no VM and wait for none";
  EXPECT_TRUE(WaitForUserfaultfds(0)) << pager_->CountUserfaultfds() << " userfaultfds still held";
  EXPECT_TRUE(std::filesystem::is_empty(pager_->root_dir() + "/live")) << "a completed session left its record";
  // No fd (uffd, connection, backing file, eventfds, pidfd) and no thread
  // is left of them. (The HTTP server's connection threads end a moment
  // after they answer: wait for them.)
  ProcessFootprint now;
  EXPECT_TRUE(WaitFor([&] { return (now = ProcessFootprint::Of(pager_->pid())).FdsAndThreadsAtMost(baseline); }))
      << "baseline " << baseline.ToString() << "; after " << kSessions << " completed sessions " << now.ToString();

  // A session waiting for its VMM is active.
  CreateSession("waiting", snap_);
  EXPECT_EQ(pager_->client().Health()->active_sessions, 1u);
}

TEST_F(PagerSessionLifeTest, TheOldestEndedSessionsAreForgottenPast1024) {
  StartPager();
  snap_ = MakeSnapshot("mem", 6 * kMiB, 72);
  // Ended here by a handshake that carries a userfaultfd and no region.
  auto uffd = Userfaultfd::Create(O_CLOEXEC | O_NONBLOCK);
  ASSERT_TRUE(uffd.ok()) << uffd.status().ToString();
  auto end_by_bad_handshake = [&](const std::string& id) {
    auto conn = ConnectUnixSocket(CreateSession(id, snap_));
    ASSERT_TRUE(conn.ok()) << conn.status().ToString();
    int fds[] = {uffd->fd()};
    ASSERT_TRUE(SendWithFds(conn->get(), "[]", fds).ok());
  };
  // The first three end before any other session is even created.
  for (const char* id : {"first-0", "first-1", "first-2"}) {
    end_by_bad_handshake(id);
    ASSERT_TRUE(WaitFor([&] { return SessionState(id) == "failed"; })) << Session(id).dump();
  }
  constexpr int kMore = 1024;
  std::vector<std::thread> workers;
  for (int w = 0; w < 4; ++w) {
    workers.emplace_back([&, w] {
      for (int i = w; i < kMore; i += 4) end_by_bad_handshake("later-" + std::to_string(i));
    });
  }
  for (auto& t : workers) t.join();
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_TRUE(WaitFor(
      [&] {
        auto list = pager_->client().ListSessions();
        return list.ok() &&
               std::all_of(list->begin(), list->end(), [](const nlohmann::json& s) { return s["state"] == "failed"; });
      },
      std::chrono::seconds(60)));
  // 1027 ended, 1024 kept: the three that ended first are forgotten.
  auto list = pager_->client().ListSessions();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), 1024u);
  for (const char* id : {"first-0", "first-1", "first-2"}) {
    EXPECT_EQ(pager_->client().GetSession(id).status().code(), ErrorCode::kNotFound) << id;
  }
  EXPECT_EQ(SessionState("later-0"), "failed");
  EXPECT_TRUE(WaitForUserfaultfds(0)) << pager_->CountUserfaultfds() << " userfaultfds still held";
}

TEST_F(PagerSessionLifeTest, SilentConnectionsDoNotDelayTheRealVmm) {
  // Each silent client would hold the session for a whole handshake
  // timeout if connections were taken one at a time.
  StartPager({.handshake_timeout_ms = 30000});
  snap_ = MakeSnapshot("mem", 6 * kMiB, 73);
  std::string sock = CreateSession("s", snap_);
  std::vector<UniqueFd> silent;
  for (int i = 0; i < 5; ++i) {
    auto conn = ConnectUnixSocket(sock);
    ASSERT_TRUE(conn.ok()) << conn.status().ToString();
    silent.push_back(std::move(*conn));
  }
  auto vm = VmmStandIn::Restore(sock, kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  ASSERT_TRUE(WaitFor([&] { return SessionState("s") == "serving"; }, std::chrono::seconds(10)))
      << "the VMM waited behind silent connections: " << Session("s").dump() << "\n"
      << pager_->Log();
  TouchAllPages((*vm)->memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap_));
  // Once the VMM was taken, the silent ones were turned away (not timed out).
  for (auto& conn : silent) EXPECT_TRUE(ClosedByPeer(conn.get()));
  EXPECT_EQ(SessionCounter("s", "refused_handshakes"), 5u);
  EXPECT_EQ(pager_->Log().find("sent no handshake within"), std::string::npos) << pager_->Log();
}

TEST_F(PagerSessionLifeTest, ASecondVmmOnOneSessionIsTurnedAwayAndCounted) {
  StartPager();
  snap_ = MakeSnapshot("mem", 6 * kMiB, 74);
  std::string sock = CreateSession("one", snap_);
  // Both connect before either sends: both are queued on the session socket.
  auto c1 = ConnectUnixSocket(sock);
  auto c2 = ConnectUnixSocket(sock);
  ASSERT_TRUE(c1.ok() && c2.ok());
  std::unique_ptr<VmmStandIn> vms[2];
  for (int i : {0, 1}) {
    auto vm = VmmStandIn::RestoreOn(std::move(i == 0 ? *c1 : *c2), kRegions);
    if (vm.ok()) {
      vms[i] = std::move(*vm);
    } else {
      // The pager took the other VMM first and closed this connection
      // before it sent: its load fails at once.
      int e = vm.status().error_number();
      EXPECT_TRUE(e == EPIPE || e == ECONNRESET) << vm.status().ToString();
    }
  }
  ASSERT_TRUE(vms[0] || vms[1]);
  ASSERT_TRUE(WaitFor([&] { return SessionState("one") == "serving"; }));
  // One of them is served; the pager closes the other's connection (it never
  // closes the connection of the VMM it serves).
  auto closed = [&](int i) {
    return !vms[i] || ClosedByPeer(vms[i]->handshake.connection.get(), std::chrono::milliseconds(0));
  };
  ASSERT_TRUE(WaitFor([&] { return closed(0) || closed(1); })) << pager_->Log();
  VmmStandIn& served = closed(0) ? *vms[1] : *vms[0];
  EXPECT_FALSE(ClosedByPeer(served.handshake.connection.get(), std::chrono::milliseconds(0)));
  TouchAllPages(served.memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile(served.memory, snap_));
  EXPECT_EQ(SessionCounter("one", "refused_handshakes"), 1u);
  EXPECT_EQ(Stat("refused_handshakes"), 1u);
  EXPECT_NE(pager_->Log().find("has its VMM already"), std::string::npos) << pager_->Log();
  // The socket is gone: a third VMM's load fails at once.
  auto third = VmmStandIn::Restore(sock, kRegions);
  ASSERT_FALSE(third.ok());
  EXPECT_EQ(third.status().error_number(), ENOENT) << third.status().ToString();
  EXPECT_EQ(pager_->CountUserfaultfds(), 1u) << "the turned-away VMM's userfaultfd was kept";
}

TEST_F(PagerSessionLifeTest, AVmmWithoutAPidfdIsSeenToExitThroughItsConnection) {
  StartPager();
  snap_ = MakeSnapshot("mem", 6 * kMiB, 75);
  // The process that connected is gone before the handshake, so the pager
  // cannot open a pidfd on it (nor read its identity); the VMM keeps the
  // connection open, as Firecracker 1.12+ does.
  auto vmm = ChildVmm::Start(CreateSession("p", snap_),
                             {.regions = kRegions, .snapshot_path = snap_, .connect_from_exited_helper = true});
  ASSERT_TRUE(vmm.ok()) << vmm.status().ToString();
  ASSERT_TRUE((*vmm)->Verify(0).ok());
  ASSERT_TRUE((*vmm)->Verify(5 * kMiB).ok());
  EXPECT_EQ(SessionState("p"), "serving");
  ASSERT_TRUE((*vmm)->Exit().ok());
  ASSERT_TRUE((*vmm)->WaitForExit(std::chrono::seconds(10)));
  ASSERT_TRUE(WaitFor([&] { return SessionState("p") == "closed"; })) << Session("p").dump() << "\n" << pager_->Log();
  EXPECT_NE(Session("p").value("reason", "").find("hung up"), std::string::npos) << Session("p").dump();
  EXPECT_TRUE(WaitForUserfaultfds(0)) << pager_->CountUserfaultfds() << " userfaultfds still held";
}

TEST_F(PagerSessionLifeTest, ThePagerRaisesItsFdLimitToTheHardLimit) {
  rlimit ours{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &ours), 0);
  if (ours.rlim_max != RLIM_INFINITY && ours.rlim_max <= 1024) {
    GTEST_SKIP() << "the hard fd limit here is " << ours.rlim_max << ": nothing to raise";
  }
  // The pager inherits a low soft limit, as from a shell.
  rlimit low{1024, ours.rlim_max};
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  StartPager();
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &ours), 0);
  rlimit pagers{};
  ASSERT_EQ(::prlimit(pager_->pid(), RLIMIT_NOFILE, nullptr, &pagers), 0);
  EXPECT_EQ(pagers.rlim_cur, ours.rlim_max);
  EXPECT_NE(pager_->Log().find("open files"), std::string::npos) << pager_->Log();
}

}  // namespace
}  // namespace uffdpager::testing::session_life_test
