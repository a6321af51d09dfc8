// Upgrade without draining: a newer pager takes the live sessions of an older
// one over handover.sock (SCM_RIGHTS), and the older one exits at once, while
// the VMs' vCPU threads keep faulting throughout.
#include <sys/mman.h>
#include <sys/socket.h>

#include <filesystem>
#include <iostream>

#include "common/uffd_handshake.h"
#include "common/unix_socket.h"
#include "pager/continuity/session_handover.h"
#include "support/pager_fixture.h"
#include "support/vcpu_walkers.h"

namespace uffdpager::testing::handover_test {
namespace {

constexpr uint64_t kMiB = 1ULL << 20;
#ifdef UFFDPAGER_SANITIZER_BUILD
constexpr uint64_t kVmBytes = 16 * kMiB;
#else
constexpr uint64_t kVmBytes = 48 * kMiB;
#endif
const std::vector<uint64_t> kRegions = {kVmBytes / 2, kVmBytes / 2};

class PagerHandoverTest : public PagerFixture {
 protected:
  std::unique_ptr<TestPager> StartVersion(const std::string& version, std::vector<std::string> args = {}) {
    PagerProcessOptions options;
    options.version_key = version;
    options.extra_args = std::move(args);
    auto p = TestPager::Start(dir_.path(), options);
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    return p.ok() ? std::move(*p) : nullptr;
  }
  std::string Create(const TestPager& pager, const std::string& id, const std::string& backing) {
    CreateSessionRequest req;
    req.session_id = id;
    req.instance_id = "vm-" + id;
    req.backing_memory_path = backing;
    auto created = pager.client().CreateSession(req);
    EXPECT_TRUE(created.ok()) << created.status().ToString();
    return created.ok() ? created->uffd_socket_path : "";
  }
};

TEST_F(PagerHandoverTest, NewVersionTakesLiveSessionsWhileVmsFaultAndTheOldOneExits) {
  auto old_pager = StartVersion("v1");
  ASSERT_TRUE(old_pager);
  std::string snap_a = MakeSnapshot("mem-a", kVmBytes, 101);
  std::string snap_b = MakeSnapshot("mem-b", kVmBytes, 202);
  auto vm_a = VmmStandIn::Restore(Create(*old_pager, "a", snap_a), kRegions);
  ASSERT_TRUE(vm_a.ok()) << vm_a.status().ToString();
  auto vm_b = VmmStandIn::Restore(Create(*old_pager, "b", snap_b), kRegions);
  ASSERT_TRUE(vm_b.ok()) << vm_b.status().ToString();
  // A session whose VMM has not connected yet: its socket must keep working.
  std::string waiting_socket = Create(*old_pager, "w", snap_a);

  // A balloon discarded a range of a before the hand-over: the new pager
  // must serve it as zeros, never as snapshot bytes.
  const std::pair<uint64_t, uint64_t> removed = {3 * kMiB, 3 * kMiB + 32 * 4096};
  ASSERT_EQ(::madvise((*vm_a)->memory.AtFileOffset(removed.first), removed.second - removed.first, MADV_DONTNEED), 0);

  VcpuWalkers walk_a((*vm_a)->memory, 2);
  VcpuWalkers walk_b((*vm_b)->memory, 2);
  ASSERT_TRUE(WaitFor([&] { return walk_a.touched() > 100 && walk_b.touched() > 100; }, std::chrono::seconds(30)));

  auto started_at = std::chrono::steady_clock::now();
  auto new_pager = StartVersion("v2", {"--take-over", "v1"});
  ASSERT_TRUE(new_pager);
  auto ready_at = std::chrono::steady_clock::now();
  // The old one gives everything away and exits at once, not when its VMs end.
  int wait_status = 0;
  EXPECT_TRUE(old_pager->WaitForExit(std::chrono::seconds(20), &wait_status)) << old_pager->Log();
  auto ms = [](auto d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); };
  std::cout << "hand-over of 3 sessions: new pager ready (sessions taken) " << ms(ready_at - started_at)
            << " ms after its start; old pager gone after " << ms(std::chrono::steady_clock::now() - started_at)
            << " ms\n";
  EXPECT_TRUE(WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0) << wait_status;

  for (const char* id : {"a", "b", "w"}) {
    auto s = new_pager->client().GetSession(id);
    ASSERT_TRUE(s.ok()) << id << ": " << s.status().ToString() << "\n" << new_pager->Log();
    EXPECT_EQ((*s)["origin"], "taken over from version v1") << s->dump();
  }
  EXPECT_EQ(SessionState(*new_pager, "a"), "serving");
  // The hand-over happened mid-walk: the new pager served faults of both VMs.
  for (const char* id : {"a", "b"}) {
    auto counters = (*new_pager->client().GetSession(id))["counters"];
    EXPECT_GT(counters["faults"].get<uint64_t>(), 0u) << id << ": " << counters.dump();
  }
  EXPECT_EQ(SessionState(*new_pager, "w"), "waiting");

  // The VMs keep running on the new pager: faults keep being served...
  uint64_t a_before = walk_a.touched(), b_before = walk_b.touched();
  EXPECT_TRUE(WaitFor([&] { return walk_a.touched() > a_before + 1000 && walk_b.touched() > b_before + 1000; },
                      std::chrono::seconds(30)))
      << new_pager->Log();
  ASSERT_TRUE(walk_a.Stop()) << "a vCPU thread of a is stuck\n" << new_pager->Log();
  ASSERT_TRUE(walk_b.Stop()) << "a vCPU thread of b is stuck\n" << new_pager->Log();
  // ...and every byte is the snapshot's (zeros where the balloon took memory).
  EXPECT_TRUE(MatchesSnapshotFile((*vm_a)->memory, snap_a, {removed}));
  EXPECT_TRUE(MatchesSnapshotFile((*vm_b)->memory, snap_b));

  // The waiting session's VMM arrives after the upgrade, at the path it was given.
  auto vm_w = VmmStandIn::Restore(waiting_socket, kRegions);
  ASSERT_TRUE(vm_w.ok()) << vm_w.status().ToString() << "\n" << new_pager->Log();
  TouchAllPages((*vm_w)->memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile((*vm_w)->memory, snap_a));
  EXPECT_EQ(SessionState(*new_pager, "w"), "serving");

  // The new pager's own records name them now; the old one's are gone.
  EXPECT_TRUE(std::filesystem::is_empty(old_pager->root_dir() + "/live"));
  EXPECT_FALSE(std::filesystem::is_empty(new_pager->root_dir() + "/live"));
  for (const char* id : {"a", "b", "w"}) EXPECT_TRUE(new_pager->client().CloseSession(id).ok());
  EXPECT_TRUE(
      WaitFor([&] { return std::filesystem::is_empty(new_pager->root_dir() + "/live"); }, std::chrono::seconds(5)));
}

// The old pager's side when the taker refuses a session (here the test is
// the taker, speaking the real protocol) or vanishes in the middle.
TEST_F(PagerHandoverTest, SessionsTheTakerRefusesOrDropsStayServedByTheOldPager) {
  auto old_pager = StartVersion("v1");
  ASSERT_TRUE(old_pager);
  std::string snap = MakeSnapshot("mem", kVmBytes, 7);
  auto vm = VmmStandIn::Restore(Create(*old_pager, "kept", snap), kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  // The handshake is one message with no reply: until the pager has taken
  // it, the session still waits and would be offered as a listener.
  ASSERT_TRUE(WaitFor([&] { return SessionState(*old_pager, "kept") == "serving"; }));
  VcpuWalkers walk((*vm)->memory, 2);
  const std::string handover = old_pager->root_dir() + "/handover.sock";

  auto taken = TakeOverSessions(handover, "v2", [](DetachedSession session) {
    EXPECT_EQ(session.checkpoint.spec.id, "kept");
    EXPECT_TRUE(session.fds.uffd.valid());
    return Status::Conflict("a session kept is live here already");
  });
  ASSERT_TRUE(taken.ok()) << taken.status().ToString();
  EXPECT_EQ(*taken, 0u);
  uint64_t before = walk.touched();
  EXPECT_TRUE(WaitFor([&] { return walk.touched() > before + 1000; }, std::chrono::seconds(30))) << old_pager->Log();
  auto s = old_pager->client().GetSession("kept");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ((*s)["state"], "serving");
  EXPECT_EQ((*s)["origin"], "kept: the hand-over failed");

  // A taker that receives the session and goes away without answering.
  {
    auto conn = ConnectUnixSocket(handover, SOCK_SEQPACKET);
    ASSERT_TRUE(conn.ok()) << conn.status().ToString();
    ASSERT_TRUE(SendHandoverMessage(conn->get(), {{"take_over", "v3"}}).ok());
    auto offered = ReceiveHandoverMessage(conn->get(), std::chrono::seconds(10));
    ASSERT_TRUE(offered.ok()) << offered.status().ToString();
    EXPECT_EQ(offered->body["session"]["session_id"], "kept");
  }
  before = walk.touched();
  EXPECT_TRUE(WaitFor([&] { return walk.touched() > before + 1000; }, std::chrono::seconds(30))) << old_pager->Log();
  ASSERT_TRUE(walk.Stop()) << old_pager->Log();
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap));

  // It drains: it refuses new sessions and exits once its VM is done.
  auto health = old_pager->client().Health();
  ASSERT_TRUE(health.ok());
  EXPECT_TRUE(health->draining);
  EXPECT_TRUE(old_pager->client().CloseSession("kept").ok());
  EXPECT_TRUE(old_pager->WaitForExit(std::chrono::seconds(10))) << old_pager->Log();
}

TEST_F(PagerHandoverTest, TakingOverFromAVersionThatIsNotRunningStartsNormally) {
  auto pager = StartVersion("v2", {"--take-over", "v1", "--take-over-all"});
  ASSERT_TRUE(pager);
  auto health = pager->client().Health();
  ASSERT_TRUE(health.ok()) << health.status().ToString();
  EXPECT_EQ(health->active_sessions, 0u);
  EXPECT_FALSE(health->draining);
}

TEST_F(PagerHandoverTest, AMalformedTakeOverRequestIsAnsweredAndChangesNothing) {
  auto pager = StartVersion("v1");
  ASSERT_TRUE(pager);
  std::string snap = MakeSnapshot("mem", kVmBytes, 9);
  auto vm = VmmStandIn::Restore(Create(*pager, "s", snap), kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();

  for (std::string garbage : {std::string("not json"), std::string("{\"take_over\": 5}"), std::string("[1,2]")}) {
    auto conn = ConnectUnixSocket(pager->root_dir() + "/handover.sock", SOCK_SEQPACKET);
    ASSERT_TRUE(conn.ok()) << conn.status().ToString();
    ASSERT_TRUE(SendWithFds(conn->get(), garbage, {}).ok());
    auto answer = ReceiveHandoverMessage(conn->get(), std::chrono::seconds(10));
    ASSERT_TRUE(answer.ok()) << answer.status().ToString();
    EXPECT_TRUE(answer->body.contains("error")) << answer->body.dump();
  }
  // A peer that connects and says nothing is dropped after a bounded wait.
  auto silent = ConnectUnixSocket(pager->root_dir() + "/handover.sock", SOCK_SEQPACKET);
  ASSERT_TRUE(silent.ok());
  auto answer = ReceiveHandoverMessage(silent->get(), std::chrono::seconds(15));
  ASSERT_TRUE(answer.ok()) << answer.status().ToString();
  EXPECT_TRUE(answer->body.contains("error"));

  auto health = pager->client().Health();
  ASSERT_TRUE(health.ok());
  EXPECT_FALSE(health->draining);
  TouchAllPages((*vm)->memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap));
  EXPECT_EQ(SessionState(*pager, "s"), "serving");
}

}  // namespace
}  // namespace uffdpager::testing::handover_test
