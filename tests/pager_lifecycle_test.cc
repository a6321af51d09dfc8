// Session lifecycle through the control API: complete, close, replace, drain.
#include <sys/mman.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/unix_socket.h"
#include "support/pager_fixture.h"

namespace uffdpager::testing::lifecycle_test {
namespace {

constexpr uint64_t kMiB = 1ULL << 20;
const std::vector<uint64_t> kRegions = {8 * kMiB, 4 * kMiB};

class PagerLifecycleTest : public PagerFixture {};

// True if every page of `memory` is resident (so reading it cannot fault).
bool AllResident(const GuestMemory& memory) {
  for (size_t r = 0; r < memory.region_count(); ++r) {
    std::vector<unsigned char> vec(memory.region_size(r) / 4096);
    if (::mincore(memory.region_data(r), memory.region_size(r), vec.data()) != 0) return false;
    for (unsigned char v : vec) {
      if (!(v & 1)) return false;
    }
  }
  return true;
}

TEST_F(PagerLifecycleTest, CompleteLetsThePagerExitWithMemoryStillRight) {
  StartPager();
  std::string snap = MakeSnapshot("mem", 12 * kMiB, 11);
  auto vm = VmmStandIn::Restore(CreateSession("c", snap), kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  // The guest has touched a little; a balloon discarded a range.
  for (uint64_t off = 0; off < 12 * kMiB; off += 40 * 4096) {
    (void)*reinterpret_cast<volatile uint8_t*>((*vm)->memory.AtFileOffset(off));
  }
  ASSERT_EQ(::madvise((*vm)->memory.AtFileOffset(5 * kMiB), 16 * 4096, MADV_DONTNEED), 0);

  // A demand-faulting thread runs during completion; it publishes the page
  // it is on, so a fault left unwoken shows up as a named page, not a hang.
  const uint64_t pages = PageCount((*vm)->memory);
  std::atomic<uint64_t> touching{0};
  std::atomic<bool> touched{false};
  std::thread toucher([&] {
    for (uint64_t p = 0; p < pages; ++p) {
      touching.store(p);
      (void)*reinterpret_cast<volatile const uint8_t*>((*vm)->memory.AtFileOffset(p * 4096));
    }
    touched = true;
  });
  Status st = pager_->client().CompleteSession("c", std::chrono::seconds(60));
  if (!WaitFor([&] { return touched.load(); }, std::chrono::seconds(30))) {
    ADD_FAILURE() << "the toucher is still blocked on page " << touching.load() << " 30 s after complete answered "
                  << st.ToString() << "\nsession: " << Session("c").dump() << "\n"
                  << pager_->Log();
    // Releasing our uffd wakes every thread waiting on it, so the test ends.
    (*vm)->handshake.uffd = Userfaultfd();
  }
  toucher.join();
  ASSERT_TRUE(st.ok()) << st.ToString() << "\n" << pager_->Log();
  auto s = Session("c");
  EXPECT_EQ(s["state"], "completed");
  EXPECT_GT(s["counters"]["completion_pages"].get<uint64_t>(), 0u);

  // Completing twice is a conflict, not a second run.
  Status again = pager_->client().CompleteSession("c");
  EXPECT_EQ(again.code(), ErrorCode::kConflict) << again.ToString();

  // The pager may now go away: drain exits since no session holds a VM.
  Status drained = pager_->client().Drain();
  ASSERT_TRUE(drained.ok()) << drained.ToString() << "\n" << pager_->Log();
  int status = 0;
  ASSERT_TRUE(pager_->WaitForExit(std::chrono::seconds(10), &status)) << pager_->Log();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status << "\n" << pager_->Log();

  // Every page but the removed ones is resident, so nothing can fault (and
  // hang) any more; removed pages read as zeros from plain anonymous memory.
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap, {{5 * kMiB, 5 * kMiB + 16 * 4096}}));
  EXPECT_TRUE(AllResident((*vm)->memory));
}

TEST_F(PagerLifecycleTest, AFailedCompletionLeavesTheSessionServing) {
  StartPager();
  std::string snap = MakeSnapshot("mem", 12 * kMiB, 17);
  auto file = ReadFileBytes(snap);
  auto vm = VmmStandIn::Restore(CreateSession("f", snap), kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  // The handshake returns once sent; the pager adopts it a moment later.
  ASSERT_TRUE(WaitFor([&] { return SessionState("f") == "serving"; }));
  // The file loses its tail: completion cannot read every page.
  ASSERT_EQ(::truncate(snap.c_str(), 6 * kMiB), 0);
  Status st = pager_->client().CompleteSession("f");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("truncated"), std::string::npos) << st.ToString();
  auto s = Session("f");
  EXPECT_EQ(s["state"], "serving") << s.dump();
  EXPECT_EQ(s["counters"]["unservable_faults"], 0) << "a completion failure is not a fault failure";
  // Pages completion did install, and pages faulted afterwards, are right.
  for (uint64_t off = 0; off < 6 * kMiB; off += 4096) {
    ASSERT_EQ(0, std::memcmp((*vm)->memory.AtFileOffset(off), &file[off], 4096)) << "offset " << off;
  }
  EXPECT_EQ(SessionState("f"), "serving");
}

TEST_F(PagerLifecycleTest, CompleteAnswersNotFoundAndConflictForSessionsNotServing) {
  StartPager();
  std::string snap = MakeSnapshot("mem", 12 * kMiB, 12);
  EXPECT_EQ(pager_->client().CompleteSession("nope").code(), ErrorCode::kNotFound);
  CreateSession("waiting", snap);
  Status st = pager_->client().CompleteSession("waiting");
  EXPECT_EQ(st.code(), ErrorCode::kConflict);
  EXPECT_NE(st.message().find("waiting"), std::string::npos) << st.ToString();
  // Still waiting and usable afterwards.
  EXPECT_EQ(SessionState("waiting"), "waiting");
}

TEST_F(PagerLifecycleTest, CloseIsIdempotentAndRemovesTheSocket) {
  StartPager();
  std::string snap = MakeSnapshot("mem", 12 * kMiB, 13);
  std::string sock = CreateSession("x", snap);
  EXPECT_EQ(::access(sock.c_str(), F_OK), 0);
  EXPECT_TRUE(pager_->client().CloseSession("x").ok());
  EXPECT_TRUE(pager_->client().CloseSession("x").ok());
  EXPECT_TRUE(pager_->client().CloseSession("never-existed").ok());
  EXPECT_NE(::access(sock.c_str(), F_OK), 0);
  EXPECT_EQ(pager_->client().GetSession("x").status().code(), ErrorCode::kNotFound);
}

// The names of the pager's threads, from /proc.
std::vector<std::string> ThreadNames(pid_t pid) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    if (std::getline(comm, name)) names.push_back(name);
  }
  return names;
}

TEST_F(PagerLifecycleTest, ASessionThreadIsNamedAfterItsSessionUntilClosed) {
  // Operators find a session's thread in top, perf or gdb by its id.
  StartPager();
  std::string snap = MakeSnapshot("mem", 12 * kMiB, 13);
  CreateSession("vm-7", snap);
  auto named = [this] {
    auto names = ThreadNames(pager_->pid());
    return std::count(names.begin(), names.end(), "s:vm-7");
  };
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (named() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(named(), 1);
  ASSERT_TRUE(pager_->client().CloseSession("vm-7").ok());
  EXPECT_EQ(named(), 0);
}

TEST_F(PagerLifecycleTest, ANewSessionWithALiveIdReplacesIt) {
  StartPager();
  std::string a = MakeSnapshot("a", 12 * kMiB, 14);
  std::string b = MakeSnapshot("b", 12 * kMiB, 15);
  CreateSession("same", a);
  std::string sock = CreateSession("same", b);
  auto list = pager_->client().ListSessions();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0]["backing_memory_path"], b);
  auto vm = VmmStandIn::Restore(sock, kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  TouchAllPages((*vm)->memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, b));
}

TEST_F(PagerLifecycleTest, DrainRefusesNewSessionsServesOldOnesAndExitsAfterTheLast) {
  StartPager();
  std::string snap = MakeSnapshot("mem", 12 * kMiB, 16);
  auto vm = VmmStandIn::Restore(CreateSession("d", snap), kRegions);
  ASSERT_TRUE(vm.ok());
  ASSERT_TRUE(pager_->client().Drain().ok());
  auto health = pager_->client().Health();
  ASSERT_TRUE(health.ok());
  EXPECT_TRUE(health->draining);
  CreateSessionRequest req{"", "late", snap, "", false};
  auto refused = pager_->client().CreateSession(req);
  EXPECT_EQ(refused.status().code(), ErrorCode::kUnavailable) << refused.status().ToString();
  // The existing session is still served while draining.
  TouchAllPages((*vm)->memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap));
  EXPECT_FALSE(pager_->WaitForExit(std::chrono::milliseconds(300))) << "exited while a session was live";
  ASSERT_TRUE(pager_->client().CloseSession("d").ok());
  EXPECT_TRUE(pager_->WaitForExit(std::chrono::seconds(10))) << pager_->Log();
}

TEST_F(PagerLifecycleTest, DrainDoesNotWaitForSessionsWithoutAVm) {
  StartPager();
  std::string snap = MakeSnapshot("mem", 12 * kMiB, 18);
  std::string waiting_socket = CreateSession("waiting", snap);
  auto vm = VmmStandIn::Restore(CreateSession("served", snap), kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  ASSERT_TRUE(WaitFor([&] { return SessionState("served") == "serving"; }));
  ASSERT_TRUE(pager_->client().Drain().ok());
  // The VM that holds the pager is served to the end.
  TouchAllPages((*vm)->memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap));
  EXPECT_EQ(SessionState("waiting"), "waiting");
  ASSERT_TRUE(pager_->client().CloseSession("served").ok());
  // A session still waiting for its VMM holds no VM: the pager exits anyway,
  // and removes its socket, so a VMM that comes late gets a clear error
  // (ENOENT) instead of a load that hangs.
  int status = 0;
  ASSERT_TRUE(pager_->WaitForExit(std::chrono::seconds(10), &status)) << pager_->Log();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  auto late = VmmStandIn::Restore(waiting_socket, kRegions);
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.status().error_number(), ENOENT) << late.status().ToString();
}

TEST_F(PagerLifecycleTest, DrainStillServesAVmmThatConnectedBeforeItsSocketWent) {
  StartPager({.handshake_timeout_ms = 3000});
  std::string snap = MakeSnapshot("mem", 12 * kMiB, 19);
  std::string sock = CreateSession("late", snap);
  // Silent clients fill every slot the session reads at once, so the VMM that
  // connects after them waits on the socket's queue, not yet accepted, when
  // the drain makes the session stop waiting.
  std::vector<UniqueFd> silent;
  for (int i = 0; i < 16; ++i) {
    auto conn = ConnectUnixSocket(sock);
    ASSERT_TRUE(conn.ok()) << conn.status().ToString();
    silent.push_back(std::move(*conn));
  }
  auto vm = VmmStandIn::Restore(sock, kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  ASSERT_TRUE(pager_->client().Drain().ok());
  // The VMM sent its handshake: it is served, however the drain and the
  // silent clients' deadlines fall, and never left hanging.
  std::atomic<bool> touched{false};
  std::thread toucher([&] {
    TouchAllPages((*vm)->memory, 2);
    touched = true;
  });
  if (!WaitFor([&] { return touched.load(); }, std::chrono::seconds(30))) {
    ADD_FAILURE() << "the VMM that connected before the drain was not served\n" << pager_->Log();
    (*vm)->handshake.uffd = Userfaultfd();  // nobody else holds it: its threads wake
  }
  toucher.join();
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap));
  EXPECT_EQ(SessionState("late"), "serving");
  EXPECT_NE(::access(sock.c_str(), F_OK), 0);
  ASSERT_TRUE(pager_->client().CloseSession("late").ok());
  EXPECT_TRUE(pager_->WaitForExit(std::chrono::seconds(10))) << pager_->Log();
}

}  // namespace
}  // namespace uffdpager::testing::lifecycle_test
