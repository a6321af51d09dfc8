// Stress: for a bounded time, several threads and VMM processes drive one
// real pager at once through both doors: the control API (create, replace
// with the same id, complete, close, and bad requests: a missing file, a
// FIFO, bad JSON, unknown ids, a complete out of turn), session sockets
// (VMM stand-ins that fault from several threads, VMMs in processes of their
// own that exit, silent connectors, garbage with and without a
// userfaultfd) and balloon removes while pages fault. Every VM's memory is
// checked byte for byte against its snapshot (zeros where removed), one VM
// living through the whole run at the end, and afterwards the pager holds
// exactly the fds, threads and sessions it held before.
#include <sys/mman.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <set>
#include <thread>

#include "common/http_client.h"
#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "common/unix_socket.h"
#include "support/child_vmm.h"
#include "support/pager_fixture.h"
#include "support/process_footprint.h"

namespace uffdpager::testing::stress_test {
namespace {

using namespace std::chrono_literals;
constexpr uint64_t kMiB = 1ULL << 20;
constexpr uint64_t kPage = 4096;
// Two regions, as Firecracker lays out memory around the MMIO hole.
const std::vector<uint64_t> kRegions = {3 * kMiB, 1 * kMiB};
constexpr uint64_t kMemoryBytes = 4 * kMiB;

#ifdef UFFDPAGER_SANITIZER_BUILD
constexpr int kDefaultSeconds = 5;  // sanitizers make every fault many times slower
#else
constexpr int kDefaultSeconds = 15;
#endif

std::chrono::seconds StressTime() {
  const char* env = std::getenv("UFFDPAGER_STRESS_SECONDS");
  return std::chrono::seconds(env ? std::atoi(env) : kDefaultSeconds);
}

// File offsets [start, end) that must read as zeros.
using ZeroRanges = std::set<std::pair<uint64_t, uint64_t>>;

::testing::AssertionResult MatchesSnapshot(const GuestMemory& memory, const std::string& snap,
                                           const ZeroRanges& zeros = {}) {
  return MatchesSnapshotFile(memory, snap, {zeros.begin(), zeros.end()});
}

// A balloon's discard of [offset, offset + length) of the memory file's
// layout (inside one region), remembered as a range that reads as zeros.
void Remove(const GuestMemory& memory, uint64_t offset, uint64_t length, ZeroRanges* zeros) {
  ASSERT_EQ(::madvise(memory.AtFileOffset(offset), length, MADV_DONTNEED), 0) << "offset " << offset;
  zeros->emplace(offset, offset + length);
}

// Round `r`'s two removes: one in each region, moving with the round.
void RemoveForRound(const GuestMemory& memory, uint64_t r, ZeroRanges* zeros) {
  Remove(memory, (r * 7 % 40) * 16 * kPage, 16 * kPage, zeros);
  Remove(memory, 3 * kMiB + (r * 5 % 12) * 16 * kPage, 8 * kPage, zeros);
}

// A failure guard, not a timer the test relies on: a VM thread blocked on a
// fault nobody serves cannot be interrupted, so a run that has not ended by
// `limit` says what the pager holds (`describe`) and aborts, rather than
// hang until ctest's timeout with nothing said.
class Watchdog {
 public:
  Watchdog(std::chrono::seconds limit, std::function<std::string()> describe)
      : thread_([this, limit, describe = std::move(describe)] {
          const auto until = std::chrono::steady_clock::now() + limit;
          MutexLock lock(&mu_);
          while (!done_) {
            if (std::chrono::steady_clock::now() >= until) {
              std::cerr << "stress run stuck after " << limit.count() << " s\n" << describe() << std::endl;
              std::abort();
            }
            cv_.WaitFor(until - std::chrono::steady_clock::now());
          }
        }) {}
  ~Watchdog() {
    {
      MutexLock lock(&mu_);
      done_ = true;
    }
    cv_.SignalAll();
    thread_.join();
  }

 private:
  Mutex mu_;
  CondVar cv_{&mu_};
  bool done_ GUARDED_BY(mu_) = false;
  std::thread thread_;
};

class PagerStressTest : public PagerFixture {
 protected:
  void SetUp() override {
    PagerFixture::SetUp();
    if (IsSkipped()) return;
    PagerProcessOptions options;
    options.handshake_timeout_ms = 300;  // silent connectors are dropped soon
    StartPager(options);
    snaps_ = {MakeSnapshot("mem-a", kMemoryBytes, 101), MakeSnapshot("mem-b", kMemoryBytes, 102)};
    fifo_ = dir_ / "fifo";
    ASSERT_EQ(::mkfifo(fifo_.c_str(), 0600), 0);
  }

  bool Running() const { return std::chrono::steady_clock::now() < deadline_ && !HasFatalFailure(); }

  // VMM stand-ins in this process: restore, fault every page from two
  // threads while a balloon removes ranges, check every byte; then complete
  // or not, and close. Ids come back every other round.
  void VmRounds(int worker) {
    for (uint64_t r = 0; Running(); ++r) {
      std::string id = "vm" + std::to_string(worker) + "-" + std::to_string(r % 2);
      const std::string& snap = snaps_[(worker + r) % 2];
      auto vm = VmmStandIn::Restore(CreateSession(id, snap, "key-" + std::to_string((worker + r) % 2)), kRegions);
      ASSERT_TRUE(vm.ok()) << vm.status().ToString();
      ZeroRanges zeros;
      std::thread toucher([&] { TouchAllPages((*vm)->memory, 2); });
      RemoveForRound((*vm)->memory, r, &zeros);
      toucher.join();
      ASSERT_TRUE(MatchesSnapshot((*vm)->memory, snap, zeros)) << id << " round " << r;
      if (r % 3 == 0) {
        Status st = pager_->client().CompleteSession(id, 60s);
        ASSERT_TRUE(st.ok()) << st.ToString();
        ASSERT_TRUE(MatchesSnapshot((*vm)->memory, snap, zeros)) << id << " after complete";
      }
      ASSERT_TRUE(pager_->client().CloseSession(id).ok());
      vms_checked_.fetch_add(1);
    }
  }

  // VMMs in processes of their own: each checks pages spread over its memory
  // and exits; the pager sees it go and the session is closed.
  void ChildVmRounds() {
    for (uint64_t r = 0; Running(); ++r) {
      std::string id = "child-" + std::to_string(r % 2);
      const std::string& snap = snaps_[r % 2];
      auto vmm = ChildVmm::Start(CreateSession(id, snap), {.regions = kRegions, .snapshot_path = snap});
      ASSERT_TRUE(vmm.ok()) << vmm.status().ToString();
      for (uint64_t off = (r % 16) * kPage; off < kMemoryBytes; off += 61 * kPage) {
        Status st = (*vmm)->Verify(off, 30s);
        ASSERT_TRUE(st.ok()) << id << " page at " << off << ": " << st.ToString();
      }
      ASSERT_TRUE((*vmm)->Exit().ok());
      ASSERT_TRUE((*vmm)->WaitForExit(30s));
      ASSERT_TRUE(pager_->client().CloseSession(id).ok());
      vms_checked_.fetch_add(1);
    }
  }

  // The control API alone: a create replaced by another with the same id,
  // a complete before any VMM (409), a close; and bad requests, each with
  // its own answer.
  void ControlRounds() {
    HttpClient http(ControlSocket());
    auto post = [&](const std::string& path, const std::string& body) {
      auto r = http.Send("POST", path, body);
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      return r.ok() ? r->status : 0;
    };
    auto body = [&](const std::string& id, const std::string& path) {
      return R"({"session_id":")" + id + R"(","instance_id":"i","backing_memory_path":")" + path + "\"}";
    };
    for (uint64_t r = 0; Running(); ++r) {
      std::string id = "ctl-" + std::to_string(r % 3);
      ASSERT_FALSE(CreateSession(id, snaps_[r % 2]).empty());
      ASSERT_FALSE(CreateSession(id, snaps_[(r + 1) % 2]).empty()) << "replace";
      EXPECT_EQ(pager_->client().CompleteSession(id).code(), ErrorCode::kConflict) << "complete before a VMM";
      ASSERT_TRUE(pager_->client().CloseSession(id).ok());
      EXPECT_EQ(post("/sessions", body("bad-missing", dir_ / "missing.mem")), 400);
      EXPECT_EQ(post("/sessions", body("bad-fifo", fifo_)), 400);
      EXPECT_EQ(post("/sessions", "{\"session_id\":\"bad-json\","), 400);
      EXPECT_EQ(post("/sessions", R"({"session_id":"../bad","instance_id":"i","backing_memory_path":"/x"})"), 400);
      EXPECT_EQ(post("/sessions/never-" + std::to_string(r) + "/complete", ""), 404);
      EXPECT_EQ(post("/sessions/never-" + std::to_string(r) + "/close", ""), 204) << "close is idempotent";
      control_rounds_.fetch_add(1);
    }
  }

  // One session socket at a time, several clients on it: a silent one that
  // holds its connection, garbage without a userfaultfd (refused, the
  // session keeps waiting), then either garbage with a userfaultfd (the
  // session fails) or the real VMM, which is served byte-exact.
  void ConnectorRounds() {
    for (uint64_t r = 0; Running(); ++r) {
      std::string id = "conn-" + std::to_string(r % 2);
      const std::string& snap = snaps_[r % 2];
      std::string sock = CreateSession(id, snap);
      auto silent = ConnectUnixSocket(sock);
      ASSERT_TRUE(silent.ok()) << silent.status().ToString();
      {
        auto garbage = ConnectUnixSocket(sock);
        ASSERT_TRUE(garbage.ok()) << garbage.status().ToString();
        ASSERT_TRUE(SendWithFds(garbage->get(), "[garbage", {}).ok());
      }
      if (r % 3 == 2) {
        auto garbage = ConnectUnixSocket(sock);
        ASSERT_TRUE(garbage.ok()) << garbage.status().ToString();
        auto uffd = Userfaultfd::Create(O_CLOEXEC | O_NONBLOCK);
        ASSERT_TRUE(uffd.ok()) << uffd.status().ToString();
        int fds[] = {uffd->fd()};
        ASSERT_TRUE(SendWithFds(garbage->get(), "{\"mappings\":[garbage", fds).ok());
        ASSERT_TRUE(WaitFor([&] { return SessionState(id) == "failed"; }, 30s)) << Session(id).dump();
        failed_sessions_.fetch_add(1);
      } else {
        auto vm = VmmStandIn::Restore(sock, kRegions);
        ASSERT_TRUE(vm.ok()) << vm.status().ToString();
        ASSERT_TRUE(MatchesSnapshot((*vm)->memory, snap)) << id << " round " << r;
        vms_checked_.fetch_add(1);
      }
      ASSERT_TRUE(pager_->client().CloseSession(id).ok());
    }
  }

  std::vector<std::string> snaps_;
  std::string fifo_;
  std::chrono::steady_clock::time_point deadline_;
  std::atomic<uint64_t> vms_checked_{0};
  std::atomic<uint64_t> control_rounds_{0};
  std::atomic<uint64_t> failed_sessions_{0};
};

TEST_F(PagerStressTest, EverythingAtOnceServesEveryByteAndLeavesNothingBehind) {
  // The idle pager after one whole session (whatever it starts once, it
  // has started), seen as two equal samples in a row.
  {
    auto vm = VmmStandIn::Restore(CreateSession("warm-up", snaps_[0]), kRegions);
    ASSERT_TRUE(vm.ok()) << vm.status().ToString();
    ASSERT_TRUE(MatchesSnapshot((*vm)->memory, snaps_[0]));
    ASSERT_TRUE(pager_->client().CloseSession("warm-up").ok());
  }
  ProcessFootprint baseline;
  ASSERT_TRUE(WaitForSteadyFootprint(pager_->pid(), &baseline));

  // One VM lives through the whole run, faulting and ballooned throughout.
  const std::string& long_snap = snaps_[1];
  auto long_vm = VmmStandIn::Restore(CreateSession("long", long_snap, "key-1"), kRegions);
  ASSERT_TRUE(long_vm.ok()) << long_vm.status().ToString();
  ZeroRanges long_zeros;

  deadline_ = std::chrono::steady_clock::now() + StressTime();
  Watchdog watchdog(StressTime() + 120s, [&] {
    auto sessions = pager_->client().ListSessions();
    std::string log = pager_->Log();
    return "sessions: " + (sessions.ok() ? sessions->dump() : sessions.status().ToString()) + "\npager log: ..." +
           log.substr(log.size() > 6000 ? log.size() - 6000 : 0);
  });
  std::vector<std::thread> threads;
  threads.emplace_back([&] { VmRounds(0); });
  threads.emplace_back([&] { VmRounds(1); });
  threads.emplace_back([&] { ChildVmRounds(); });
  threads.emplace_back([&] { ControlRounds(); });
  threads.emplace_back([&] { ConnectorRounds(); });
  uint64_t long_rounds = 0;
  for (; Running(); ++long_rounds) {
    std::thread toucher([&] { TouchAllPages((*long_vm)->memory, 1); });
    RemoveForRound((*long_vm)->memory, long_rounds, &long_zeros);
    toucher.join();
    std::this_thread::sleep_for(20ms);  // the pace of a balloon, not a wait for anything
  }
  for (auto& t : threads) t.join();
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_TRUE(MatchesSnapshot((*long_vm)->memory, long_snap, long_zeros));
  ASSERT_TRUE(pager_->client().CloseSession("long").ok());
  long_vm->reset();

  // Each kind of work ran, more than once.
  EXPECT_GE(vms_checked_.load(), 4u);
  EXPECT_GE(control_rounds_.load(), 2u);
  EXPECT_GE(long_rounds, 2u);

  // Back to the baseline: no session, and (once the last request's HTTP
  // connection is gone) exactly the fds and threads of before.
  ASSERT_TRUE(WaitFor([&] {
    auto list = pager_->client().ListSessions();
    return list.ok() && list->empty();
  })) << pager_->client().ListSessions()->dump();
  EXPECT_EQ(pager_->client().Health()->active_sessions, 0u);
  auto stats = pager_->client().Stats();
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(stats->value("failed_sessions", uint64_t{0}), failed_sessions_.load()) << stats->dump();
  EXPECT_EQ(stats->value("unservable_faults", uint64_t{0}), 0u) << stats->dump();
  EXPECT_EQ(stats->value("copy_errors", uint64_t{0}), 0u) << stats->dump();
  EXPECT_GT(stats->value("remove_events", uint64_t{0}), 0u) << stats->dump();
  ProcessFootprint now;
  EXPECT_TRUE(WaitFor(
      [&] {
        now = ProcessFootprint::Of(pager_->pid());
        return now.SameFdsAndThreads(baseline);
      },
      20s))
      << "baseline " << baseline.ToString() << "; now " << now.ToString();
  EXPECT_EQ(pager_->CountUserfaultfds(), 0u);
  std::cout << "stress: " << vms_checked_.load() << " VMs checked, " << control_rounds_.load() << " control rounds, "
            << failed_sessions_.load() << " sessions failed by garbage, " << long_rounds
            << " rounds of the long VM; pager " << now.ToString() << " (baseline " << baseline.ToString() << ")\n";
}

}  // namespace
}  // namespace uffdpager::testing::stress_test
