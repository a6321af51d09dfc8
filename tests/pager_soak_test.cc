// Soak: many sessions created, served, completed, refused and closed from
// several threads while the stats and metrics are scraped, then a check from
// /proc that the pager kept nothing: no fd, no thread, no session, and no
// more anonymous mappings than after a warm-up round of the same work.
#include <sys/mman.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/http_client.h"
#include "common/unix_socket.h"
#include "support/pager_fixture.h"
#include "support/prometheus_text.h"

namespace uffdpager::testing::soak_test {
namespace {

constexpr uint64_t kMiB = 1ULL << 20;
const std::vector<uint64_t> kRegions = {4 * kMiB, 2 * kMiB};

#ifdef UFFDPAGER_SANITIZER_BUILD
constexpr int kDefaultSoakSeconds = 8;  // sanitizers make every fault many times slower
constexpr uint64_t kMinSessions = 5;
#else
constexpr int kDefaultSoakSeconds = 25;
constexpr uint64_t kMinSessions = 20;
#endif
#ifdef UFFDPAGER_TSAN_BUILD
// TSan's runtime maps memory for each thread the process ever ran, so the
// pager's mapping count grows with sessions there by design; fds, threads
// and sessions are still exact.
constexpr bool kCountMappings = false;
#else
constexpr bool kCountMappings = true;
#endif

int SoakSeconds() {
  const char* env = std::getenv("UFFDPAGER_SOAK_SECONDS");
  return env ? std::atoi(env) : kDefaultSoakSeconds;
}

// What the pager process holds, from /proc.
struct ProcessFootprint {
  size_t fds = 0;
  size_t threads = 0;
  size_t anonymous_mappings = 0;

  static ProcessFootprint Of(pid_t pid) {
    ProcessFootprint f;
    std::string proc = "/proc/" + std::to_string(pid);
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator(proc + "/fd", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
      ++f.fds;
    for (auto it = std::filesystem::directory_iterator(proc + "/task", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
      ++f.threads;
    std::ifstream maps(proc + "/maps");
    std::string line;
    while (std::getline(maps, line)) {
      // address perms offset dev inode [path]: no path means anonymous.
      std::istringstream fields(line);
      std::string a, b, c, d, e, path;
      fields >> a >> b >> c >> d >> e >> path;
      if (path.empty()) ++f.anonymous_mappings;
    }
    return f;
  }
  std::string ToString() const {
    return "fds " + std::to_string(fds) + ", threads " + std::to_string(threads) + ", anonymous mappings " +
           std::to_string(anonymous_mappings);
  }
};

class PagerSoakTest : public PagerFixture {
 protected:
  // One session's life, in one of five shapes chosen by `round`.
  void OneSession(int worker, uint64_t round, std::atomic<uint64_t>* bad_handshakes) {
    std::string id = "w" + std::to_string(worker) + "-" + std::to_string(round % 3);  // ids are reused: replace
    std::string key = "key-" + std::to_string(round % 3);
    switch (round % 5) {
      case 3: {  // created, never connected, replaced by a new one, closed
        ASSERT_FALSE(CreateSession(id, snap_, key).empty());
        ASSERT_FALSE(CreateSession(id, snap_, key).empty());
        ASSERT_TRUE(pager_->client().CloseSession(id).ok());
        return;
      }
      case 4: {  // a garbage handshake with a userfaultfd: refused, fails, closed
        auto conn = ConnectUnixSocket(CreateSession(id, snap_, key));
        ASSERT_TRUE(conn.ok()) << conn.status().ToString();
        auto uffd = Userfaultfd::Create(O_CLOEXEC | O_NONBLOCK);
        ASSERT_TRUE(uffd.ok()) << uffd.status().ToString();
        int fds[] = {uffd->fd()};
        ASSERT_TRUE(SendWithFds(conn->get(), "[garbage", fds).ok());
        ASSERT_TRUE(WaitFor([&] { return SessionState(id) == "failed"; })) << Session(id).dump();
        bad_handshakes->fetch_add(1);
        ASSERT_TRUE(pager_->client().CloseSession(id).ok());
        return;
      }
      default: break;
    }
    auto vm = VmmStandIn::Restore(CreateSession(id, snap_, key), kRegions);
    ASSERT_TRUE(vm.ok()) << vm.status().ToString();
    TouchAllPages((*vm)->memory, 2);
    std::vector<std::pair<uint64_t, uint64_t>> zeros;
    if (round % 5 == 2) {  // a balloon discards a range while a thread faults
      zeros.emplace_back(1 * kMiB, 1 * kMiB + 64 * 4096);
      std::thread toucher([&] { TouchAllPages((*vm)->memory, 1); });
      ASSERT_EQ(::madvise((*vm)->memory.AtFileOffset(1 * kMiB), 64 * 4096, MADV_DONTNEED), 0);
      toucher.join();
    }
    ASSERT_TRUE(MatchesSnapshotFile((*vm)->memory, snap_, zeros));
    if (round % 5 == 1) {
      Status st = pager_->client().CompleteSession(id);
      ASSERT_TRUE(st.ok()) << st.ToString();
    }
    ASSERT_TRUE(pager_->client().CloseSession(id).ok());
  }

  // `workers` threads run sessions for `duration` while a scraper reads
  // /stats, /sessions and /metrics; returns how many sessions ran.
  uint64_t RunLoad(int workers, std::chrono::milliseconds duration, std::atomic<uint64_t>* bad_handshakes) {
    auto deadline = std::chrono::steady_clock::now() + duration;
    std::atomic<uint64_t> sessions{0};
    std::atomic<bool> stop{false};
    std::thread scraper([&] {
      HttpClient http(pager_->root_dir() + "/control.sock");
      while (!stop.load()) {
        EXPECT_TRUE(pager_->client().Stats().ok());
        EXPECT_TRUE(pager_->client().ListSessions().ok());
        auto metrics = http.Send("GET", "/metrics");
        EXPECT_TRUE(metrics.ok() && ParsePrometheusText(metrics->body).ok());
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    });
    std::vector<std::thread> threads;
    for (int w = 0; w < workers; ++w) {
      threads.emplace_back([&, w] {
        for (uint64_t round = 0; std::chrono::steady_clock::now() < deadline && !HasFatalFailure(); ++round) {
          OneSession(w, round, bad_handshakes);
          sessions.fetch_add(1);
        }
      });
    }
    for (auto& t : threads) t.join();
    stop.store(true);
    scraper.join();
    return sessions.load();
  }

  std::string snap_;
};

TEST_F(PagerSoakTest, ManySessionsLeaveNoFdThreadMappingOrSessionBehind) {
  StartPager();
  snap_ = MakeSnapshot("mem", 6 * kMiB, 61);
  constexpr int kWorkers = 4;
  std::atomic<uint64_t> bad_handshakes{0};

  // Warm-up with the same concurrency: malloc arenas and glibc's cache of
  // thread stacks grow to what this load needs and then stay (not a leak).
  RunLoad(kWorkers, std::chrono::seconds(2), &bad_handshakes);
  // Settled: no session left, and (measured after that request's HTTP
  // thread is gone) no more fds or threads than `target`.
  ProcessFootprint after;
  auto settled = [&](const ProcessFootprint& target) {
    return [&, target] {
      if (!pager_->client().ListSessions()->empty()) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      after = ProcessFootprint::Of(pager_->pid());
      return after.fds == target.fds && after.threads == target.threads;
    };
  };
  // After warm-up: no connection or session thread left. Wait for the HTTP
  // threads of the last requests to finish before taking the baseline.
  ASSERT_TRUE(WaitFor([&] { return pager_->client().ListSessions()->empty(); }));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ProcessFootprint baseline = ProcessFootprint::Of(pager_->pid());

  uint64_t sessions = RunLoad(kWorkers, std::chrono::seconds(SoakSeconds()), &bad_handshakes);
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_GE(sessions, kMinSessions) << "the soak did too little to mean anything";

  ASSERT_TRUE(WaitFor(settled(baseline), std::chrono::seconds(10)))
      << "baseline " << baseline.ToString() << "; now " << ProcessFootprint::Of(pager_->pid()).ToString() << "; "
      << pager_->client().ListSessions()->size() << " sessions";
  // Mappings: a leaked staging buffer, zero page or cache slab per session
  // would add hundreds over this many sessions; allow a few for allocator
  // growth that the warm-up did not reach.
  if (kCountMappings) {
    EXPECT_LE(after.anonymous_mappings, baseline.anonymous_mappings + 8)
        << "baseline " << baseline.ToString() << "; after " << sessions << " sessions " << after.ToString();
  }
  EXPECT_EQ(pager_->CountUserfaultfds(), 0u);
  EXPECT_EQ(Stat("failed_sessions"), bad_handshakes.load());
  EXPECT_EQ(Stat("unservable_faults"), 0u);
  EXPECT_EQ(Stat("copy_errors"), 0u);
  EXPECT_EQ(pager_->client().Health()->active_sessions, 0u);
  std::cout << "soak: " << sessions << " sessions; pager " << after.ToString() << " (baseline " << baseline.ToString()
            << ")\n";
}

}  // namespace
}  // namespace uffdpager::testing::soak_test
