// FaultEngine in process, over a real userfaultfd registered on this test's
// own memory (as Firecracker's persist.rs tests do the handshake in process):
// a toucher thread reads guest memory and blocks in the fault while the test
// thread drives ServeEvents in a poll loop. Every wait is bounded: a bug fails
// the test and never hangs it, because TearDown unregisters the memory and
// closes the userfaultfd, which wakes any thread still blocked in a fault or in
// a madvise waiting for its remove event to be read.
#include "pager/serving/fault_engine.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "common/guest_memory.h"
#include "common/unique_fd.h"
#include "common/userfaultfd.h"
#include "common/wait_for.h"
#include "pager/metrics/fault_counters.h"
#include "pager/serving/memory_layout.h"
#include "pager/storage/backing_file.h"
#include "pager/storage/page_cache.h"
#include "support/huge_pages.h"
#include "support/temp_dir.h"

namespace uffdpager {
namespace fault_engine_test {
namespace {

constexpr uint64_t kPage = 4096;
// A failure guard, never a synchronisation: generous for sanitizer builds.
constexpr std::chrono::seconds kDeadline{30};

// The 8-byte word at memory-file offset `offset` (a multiple of 8): distinct
// for every word of the file and never zero, so a page served from the wrong
// offset, or zeros where data belongs, cannot pass for the right bytes.
uint64_t WordAt(uint64_t offset) { return (offset / 8 + 1) * 0x9E3779B97F4A7C15ULL; }

// A memory file of `pages` pages of WordAt() data, except `zero` pages
// (written as zeros: data that happens to be zero) and `holes` (punched out).
class MemoryFile {
 public:
  MemoryFile(std::string path, uint64_t pages, std::set<uint64_t> zero = {}, std::set<uint64_t> holes = {})
      : path_(std::move(path)), pages_(pages), zero_(std::move(zero)), holes_(std::move(holes)) {
    UniqueFd fd(::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    EXPECT_TRUE(fd.valid()) << path_ << ": " << std::strerror(errno);
    for (uint64_t p = 0; p < pages_; ++p) {
      std::vector<uint8_t> page = Expected(p * kPage);
      EXPECT_EQ(::pwrite(fd.get(), page.data(), kPage, off_t(p * kPage)), ssize_t(kPage));
    }
    for (uint64_t p : holes_) {
      EXPECT_EQ(::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(p * kPage), kPage), 0)
          << std::strerror(errno);
    }
  }

  // The page at `file_offset` as the file holds it.
  std::vector<uint8_t> Expected(uint64_t file_offset) const {
    std::vector<uint8_t> page(kPage, 0);
    uint64_t p = file_offset / kPage;
    if (zero_.count(p) || holes_.count(p)) return page;
    for (uint64_t w = 0; w < kPage; w += 8) {
      uint64_t word = WordAt(file_offset + w);
      std::memcpy(page.data() + w, &word, 8);
    }
    return page;
  }

  const std::string& path() const { return path_; }
  uint64_t size() const { return pages_ * kPage; }

 private:
  std::string path_;
  uint64_t pages_;
  std::set<uint64_t> zero_, holes_;
};

// "" if equal, else where the first difference is.
std::string Diff(const uint8_t* got, const std::vector<uint8_t>& want) {
  for (size_t i = 0; i < want.size(); ++i) {
    if (got[i] != want[i]) {
      return fmt::format("first difference at byte {}: got {:#04x}, want {:#04x}", i, got[i], want[i]);
    }
  }
  return "";
}
std::string Diff(const std::vector<uint8_t>& got, const std::vector<uint8_t>& want) {
  if (got.size() != want.size()) return fmt::format("got {} bytes, want {}", got.size(), want.size());
  return Diff(got.data(), want);
}

// One "VM": guest memory allocated as Firecracker allocates it, registered in
// MISSING mode with its own userfaultfd (UFFD_FEATURE_EVENT_REMOVE, as
// Firecracker asks) over `registered_bytes` per region (0: the whole region).
struct TestVm {
  GuestMemory memory;
  Userfaultfd uffd;
  std::vector<std::pair<uintptr_t, uint64_t>> registered;

  uint8_t* At(size_t region, uint64_t page) const { return memory.region_data(region) + page * kPage; }
};

// A thread that runs `body` once. Whatever it writes lives here, so it may
// still be running (blocked in a fault) after a failed test body returned.
class Worker {
 public:
  explicit Worker(std::function<void(Worker*)> body) {
    thread_ = std::thread([this, body = std::move(body)] {
      body(this);
      done_.store(true, std::memory_order_release);
    });
  }
  ~Worker() { Join(); }
  bool done() const { return done_.load(std::memory_order_acquire); }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }

  // Results, to read only once done().
  std::vector<std::vector<uint8_t>> pages;
  int madvise_rc = 0;
  int madvise_errno = 0;

 private:
  std::atomic<bool> done_{false};
  std::thread thread_;
};

// Copies the page at `addr`: the read that faults (and blocks until served).
std::vector<uint8_t> ReadPage(const uint8_t* addr) {
  std::vector<uint8_t> out(kPage);
  std::memcpy(out.data(), addr, kPage);
  return out;
}

// Faults waiting on `uffd`, read by the server or not ("total:" in fdinfo).
int WaitingFaults(const Userfaultfd& uffd) {
  std::ifstream in("/proc/self/fdinfo/" + std::to_string(uffd.fd()));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("total:", 0) == 0) return std::stoi(line.substr(6));
  }
  return -1;
}

// Counters one engine feeds: the session's and the pager-wide ones.
struct Counters {
  FaultCounters session;
  FaultCounters global;
  CounterSink sink() { return CounterSink(&session, &global); }
};

uint64_t Get(const std::atomic<uint64_t>& field) { return field.load(std::memory_order_relaxed); }

class FaultEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto probe = Userfaultfd::Create(O_CLOEXEC | O_NONBLOCK);
    if (!probe.ok()) {
      GTEST_SKIP() << "SKIPPED, NOT PASSED: userfaultfd cannot be created here (" << probe.status().ToString()
                   << "); the FaultEngine tests need /dev/userfaultfd (or the syscall) and the right to use it";
    }
    ASSERT_FALSE(dir_.path().empty()) << "mkdtemp failed";
  }

  void TearDown() override {
    // Whatever failed, nothing stays blocked: unregistering wakes threads
    // blocked in a fault (they retry on plain anonymous memory), closing the
    // uffd releases a madvise waiting for its remove event to be read.
    for (auto& vm : vms_) {
      for (auto [addr, len] : vm->registered) (void)vm->uffd.Unregister(addr, len);
      vm->uffd.owned_fd().reset();
    }
    for (auto& w : workers_) w->Join();
  }

  // Guest memory of `region_pages` pages (4 KiB unless `page_size` says)
  // per region, registered (whole regions, or the first `registered_pages`
  // pages of each if given).
  TestVm* NewVm(const std::vector<uint64_t>& region_pages, uint64_t registered_pages = 0, uint64_t page_size = kPage) {
    std::vector<uint64_t> sizes;
    for (uint64_t p : region_pages) sizes.push_back(p * page_size);
    auto memory = GuestMemory::Allocate(sizes, page_size);
    if (!memory.ok()) {
      ADD_FAILURE() << memory.status().ToString();
      return nullptr;
    }
    auto uffd = Userfaultfd::Create(O_CLOEXEC | O_NONBLOCK);
    if (!uffd.ok()) {
      ADD_FAILURE() << uffd.status().ToString();
      return nullptr;
    }
    auto vm = std::make_unique<TestVm>(TestVm{std::move(*memory), std::move(*uffd), {}});
    auto api = vm->uffd.NegotiateApi(UFFD_FEATURE_EVENT_REMOVE);
    if (!api.ok()) {
      ADD_FAILURE() << api.status().ToString();
      return nullptr;
    }
    for (size_t r = 0; r < vm->memory.region_count(); ++r) {
      uintptr_t addr = reinterpret_cast<uintptr_t>(vm->memory.region_data(r));
      uint64_t len = registered_pages ? registered_pages * page_size : vm->memory.region_size(r);
      auto reg = vm->uffd.RegisterMissing(addr, len);
      if (!reg.ok()) {
        ADD_FAILURE() << reg.status().ToString();
        return nullptr;
      }
      vm->registered.emplace_back(addr, len);
    }
    vms_.push_back(std::move(vm));
    return vms_.back().get();
  }

  Worker* Start(std::function<void(Worker*)> body) {
    workers_.push_back(std::make_unique<Worker>(std::move(body)));
    return workers_.back().get();
  }

  // A worker that reads each page at `addrs` in order (each read may fault).
  Worker* Touch(std::vector<const uint8_t*> addrs) {
    return Start([addrs](Worker* w) {
      for (const uint8_t* a : addrs) w->pages.push_back(ReadPage(a));
    });
  }

  // Serves `engine` until `until()` holds: polls the uffd (at most 10 ms, so
  // the condition is rechecked) and calls ServeEvents. The failures the engine
  // reports go to *failures, or fail the test at once if failures is null.
  // False (and the test failed) on such a failure or if the deadline passed.
  static bool ServeUntil(FaultEngine& engine, const Userfaultfd& uffd, const std::function<bool()>& until,
                         std::vector<Status>* failures = nullptr) {
    const auto deadline = std::chrono::steady_clock::now() + kDeadline;
    while (!until()) {
      if (std::chrono::steady_clock::now() >= deadline) {
        ADD_FAILURE() << "not served within " << kDeadline.count()
                      << " s; faults still waiting: " << WaitingFaults(uffd);
        return false;
      }
      pollfd pfds[2] = {{uffd.fd(), POLLIN, 0}, {engine.loader_fd(), POLLIN, 0}};
      (void)::poll(pfds, 2, 10);
      ServeReport report = engine.ServeEvents();
      EXPECT_FALSE(report.vm_gone);
      if (report.failure) {
        if (!failures) {
          // The fault is dropped, its thread stays blocked: nothing to wait for.
          ADD_FAILURE() << "engine reported: " << report.failure->ToString();
          return false;
        }
        failures->push_back(*report.failure);
      }
    }
    return true;
  }

  void ServeTwoHugePages(long spare);

  // What the session's loop does between background steps: go on at once
  // if the engine has work it can do now, else wait (10 ms at most) for its
  // reads.
  static void WaitForWork(const FaultEngine& engine, bool completing) {
    if (engine.HasWorkNow(completing)) return;
    pollfd pfd{engine.loader_fd(), POLLIN, 0};
    (void)::poll(&pfd, 1, 10);
  }

  static std::shared_ptr<BackingFile> OpenBacking(const MemoryFile& file) {
    auto backing = BackingFile::Open(file.path());
    EXPECT_TRUE(backing.ok()) << backing.status().ToString();
    return backing.ok() ? *backing : nullptr;
  }

  // The layout of `mappings`; if it is refused, the test fails and gets an
  // empty layout (every fault then fails fast as outside every region).
  static MemoryLayout Layout(std::vector<GuestRegionMapping> mappings, uint64_t file_size) {
    auto layout = MemoryLayout::Create(std::move(mappings), file_size);
    if (layout.ok()) return std::move(*layout);
    ADD_FAILURE() << layout.status().ToString();
    return std::move(*MemoryLayout::Create({}, 0));
  }

  // An engine as a session makes one, woken through the fixture's eventfd.
  std::unique_ptr<FaultEngine> MakeEngine(Userfaultfd* uffd, MemoryLayout layout, std::shared_ptr<BackingFile> backing,
                                          PageCache* cache, const CacheKey& key, CounterSink sink,
                                          FaultEngineOptions options = {}) {
    if (!wake_fd_) wake_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    auto engine = FaultEngine::Create(uffd, std::move(layout), BackingChain::Single(std::move(backing)), cache, key,
                                      sink, options, wake_fd_.get());
    EXPECT_TRUE(engine.ok()) << engine.status().ToString();
    return engine.ok() ? std::move(*engine) : nullptr;
  }

  static CacheKey TestKey(const BackingFile& backing) { return CacheKey("test-key", backing.identity().ToString()); }

  UniqueFd wake_fd_;
  std::unique_ptr<testing::HugePageReservation> huge_pages_;  // outlives the memory
  testing::TempDir dir_;
  std::vector<std::unique_ptr<TestVm>> vms_;
  std::vector<std::unique_ptr<Worker>> workers_;
};

TEST_F(FaultEngineTest, DemandFaultsInstallExactlyTheFileBytesInTwoRegions) {
  // Region 1's bytes start 4 pages after region 0's end: the engine must use
  // each region's own file offset, not the sum of the sizes before it.
  MemoryFile file(dir_ / "mem", 8 + 4 + 12);
  TestVm* vm = NewVm({8, 12});
  ASSERT_NE(vm, nullptr);
  auto mappings = vm->memory.Mappings();
  mappings[1].offset = 12 * kPage;
  auto backing = OpenBacking(file);
  ASSERT_NE(backing, nullptr);
  PageCache cache(64 << 20);
  Counters counters;
  auto engine_owner =
      MakeEngine(&vm->uffd, Layout(mappings, file.size()), backing, &cache, TestKey(*backing), counters.sink());
  ASSERT_NE(engine_owner, nullptr);
  FaultEngine& engine = *engine_owner;

  const std::vector<std::pair<size_t, uint64_t>> touched = {{0, 0}, {0, 3}, {0, 7}, {1, 0}, {1, 5}, {1, 11}};
  std::vector<const uint8_t*> addrs;
  for (auto [r, p] : touched) addrs.push_back(vm->At(r, p));
  Worker* toucher = Touch(addrs);
  ASSERT_TRUE(ServeUntil(engine, vm->uffd, [&] { return toucher->done(); }));

  ASSERT_EQ(toucher->pages.size(), touched.size());
  for (size_t i = 0; i < touched.size(); ++i) {
    auto [r, p] = touched[i];
    EXPECT_EQ(Diff(toucher->pages[i], file.Expected(mappings[r].offset + p * kPage)), "")
        << "region " << r << " page " << p;
  }
  EXPECT_EQ(Get(counters.session.faults), 6u);
  EXPECT_EQ(Get(counters.session.pages_copied), 6u);
  EXPECT_EQ(Get(counters.session.bytes_copied), 6 * kPage);
  EXPECT_EQ(Get(counters.session.zero_pages), 0u);
  EXPECT_EQ(Get(counters.session.cache_misses), 6u);
  EXPECT_EQ(Get(counters.session.backing_bytes_read), 6 * kPage);
  EXPECT_EQ(Get(counters.session.unservable_faults), 0u);
  EXPECT_EQ(Get(counters.global.pages_copied), 6u) << "the pager-wide counters see every session's copies";
  EXPECT_EQ(engine.present_pages(), 6u) << "only the faulted pages are installed";
}

TEST_F(FaultEngineTest, HolesOfASparseFileComeBackAsZerosWithoutAnyRead) {
  // Pages 2 and 9 are holes; page 5 is data that happens to be zero.
  MemoryFile file(dir_ / "mem", 16, /*zero=*/{5}, /*holes=*/{2, 9});
  auto backing = OpenBacking(file);
  ASSERT_NE(backing, nullptr);
  if (!backing->IsHole(2 * kPage, kPage)) GTEST_SKIP() << "this filesystem does not report holes (SEEK_HOLE)";
  TestVm* vm = NewVm({16});
  ASSERT_NE(vm, nullptr);
  PageCache cache(64 << 20);
  Counters counters;
  auto engine_owner = MakeEngine(&vm->uffd, Layout(vm->memory.Mappings(), file.size()), backing, &cache,
                                 TestKey(*backing), counters.sink());
  ASSERT_NE(engine_owner, nullptr);
  FaultEngine& engine = *engine_owner;

  const std::vector<uint64_t> touched = {1, 2, 5, 9, 10};
  std::vector<const uint8_t*> addrs;
  for (uint64_t p : touched) addrs.push_back(vm->At(0, p));
  Worker* toucher = Touch(addrs);
  ASSERT_TRUE(ServeUntil(engine, vm->uffd, [&] { return toucher->done(); }));

  ASSERT_EQ(toucher->pages.size(), touched.size());
  for (size_t i = 0; i < touched.size(); ++i) {
    EXPECT_EQ(Diff(toucher->pages[i], file.Expected(touched[i] * kPage)), "") << "page " << touched[i];
  }
  EXPECT_EQ(Get(counters.session.faults), 5u);
  EXPECT_EQ(Get(counters.session.zero_pages), 3u) << "two holes and one page of zero data, all as zero pages";
  EXPECT_EQ(Get(counters.session.pages_copied), 2u);
  EXPECT_EQ(Get(counters.session.backing_bytes_read), 3 * kPage) << "the holes must not be read, the zero data is";
  EXPECT_EQ(cache.Counters().zero_items, 3u) << "zero pages are cached without a buffer";
}

TEST_F(FaultEngineTest, APageRemovedByMadviseReadsAsZerosNeverAsSnapshotBytesAgain) {
  MemoryFile file(dir_ / "mem", 8);
  TestVm* vm = NewVm({8});
  ASSERT_NE(vm, nullptr);
  auto backing = OpenBacking(file);
  ASSERT_NE(backing, nullptr);
  PageCache cache(64 << 20);
  Counters counters;
  auto engine_owner = MakeEngine(&vm->uffd, Layout(vm->memory.Mappings(), file.size()), backing, &cache,
                                 TestKey(*backing), counters.sink());
  ASSERT_NE(engine_owner, nullptr);
  FaultEngine& engine = *engine_owner;

  // One thread, in order: fault page 3 in, discard it (the madvise blocks
  // until the engine has read the remove event), touch it again, then touch
  // its neighbour, which was not discarded.
  uint8_t* page3 = vm->At(0, 3);
  uint8_t* page4 = vm->At(0, 4);
  Worker* vcpu = Start([page3, page4](Worker* w) {
    w->pages.push_back(ReadPage(page3));
    w->madvise_rc = ::madvise(page3, kPage, MADV_DONTNEED);
    w->madvise_errno = errno;
    w->pages.push_back(ReadPage(page3));
    w->pages.push_back(ReadPage(page4));
  });
  ASSERT_TRUE(ServeUntil(engine, vm->uffd, [&] { return vcpu->done(); }));

  ASSERT_EQ(vcpu->madvise_rc, 0) << std::strerror(vcpu->madvise_errno);
  ASSERT_EQ(vcpu->pages.size(), 3u);
  EXPECT_EQ(Diff(vcpu->pages[0], file.Expected(3 * kPage)), "") << "before the remove: the snapshot's bytes";
  EXPECT_EQ(Diff(vcpu->pages[1], std::vector<uint8_t>(kPage, 0)), "") << "after the remove: zeros";
  EXPECT_EQ(Diff(vcpu->pages[2], file.Expected(4 * kPage)), "") << "the remove covers only its own range";
  EXPECT_EQ(Get(counters.session.remove_events), 1u);
  EXPECT_EQ(Get(counters.session.removed_bytes), kPage);
  EXPECT_EQ(engine.removed_bytes(), kPage);
  EXPECT_EQ(engine.remove_generation(), 1u);
  EXPECT_EQ(Get(counters.session.faults), 3u);
  EXPECT_EQ(Get(counters.session.pages_copied), 2u) << "page 3 once (before the remove) and page 4";
  EXPECT_EQ(Get(counters.session.zero_pages), 1u);
}

TEST_F(FaultEngineTest, ADuplicateFaultOnAnInstalledPageIsAnsweredWithAWakeNotASecondCopy) {
  MemoryFile file(dir_ / "mem", 4);
  TestVm* vm = NewVm({4});
  ASSERT_NE(vm, nullptr);
  auto backing = OpenBacking(file);
  ASSERT_NE(backing, nullptr);
  PageCache cache(64 << 20);
  Counters counters;
  auto engine_owner = MakeEngine(&vm->uffd, Layout(vm->memory.Mappings(), file.size()), backing, &cache,
                                 TestKey(*backing), counters.sink());
  ASSERT_NE(engine_owner, nullptr);
  FaultEngine& engine = *engine_owner;

  // Two vCPUs fault the same page. Both faults are queued before the engine
  // reads anything, so it reads both in one round: the first starts the
  // page's load, the second waits for that same load, and its one copy wakes
  // them both.
  Worker* a = Touch({vm->At(0, 1)});
  Worker* b = Touch({vm->At(0, 1)});
  ASSERT_TRUE(WaitFor([&] { return WaitingFaults(vm->uffd) == 2; }, kDeadline, std::chrono::milliseconds(1)))
      << "both faults should be waiting; fdinfo says " << WaitingFaults(vm->uffd);
  ASSERT_TRUE(ServeUntil(engine, vm->uffd, [&] { return a->done() && b->done(); }));

  EXPECT_EQ(Diff(a->pages.at(0), file.Expected(kPage)), "");
  EXPECT_EQ(Diff(b->pages.at(0), file.Expected(kPage)), "");
  EXPECT_EQ(Get(counters.session.faults), 2u);
  EXPECT_EQ(Get(counters.session.pages_copied), 1u);
  EXPECT_EQ(Get(counters.session.already_present), 0u) << "no second copy, not even one that finds it there";
  EXPECT_EQ(Get(counters.session.copy_errors), 0u);
  EXPECT_EQ(Get(counters.session.cache_misses) + Get(counters.session.cache_hits), 1u)
      << "the duplicate must not even look the page up";
  EXPECT_EQ(Get(counters.session.backing_bytes_read), kPage);
}

TEST_F(FaultEngineTest, AFaultOutsideEveryRegionIsReportedAndOthersAreStillServed) {
  // 16 pages registered, but the layout (what the handshake described) covers
  // only the first 8: a fault on page 12 has no place in the file.
  MemoryFile file(dir_ / "mem", 8);
  TestVm* vm = NewVm({16});
  ASSERT_NE(vm, nullptr);
  auto mappings = vm->memory.Mappings();
  mappings[0].size = 8 * kPage;
  auto backing = OpenBacking(file);
  ASSERT_NE(backing, nullptr);
  PageCache cache(64 << 20);
  Counters counters;
  auto engine_owner =
      MakeEngine(&vm->uffd, Layout(mappings, file.size()), backing, &cache, TestKey(*backing), counters.sink());
  ASSERT_NE(engine_owner, nullptr);
  FaultEngine& engine = *engine_owner;

  const uint64_t outside = reinterpret_cast<uint64_t>(vm->At(0, 12));
  Worker* stray = Touch({vm->At(0, 12)});
  std::vector<Status> failures;
  ASSERT_TRUE(ServeUntil(
      engine, vm->uffd, [&] { return !failures.empty(); }, &failures));
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures[0].code(), ErrorCode::kInvalidArgument) << failures[0].ToString();
  EXPECT_NE(failures[0].message().find(fmt::format("{:#x}", outside)), std::string::npos) << failures[0].ToString();
  EXPECT_NE(failures[0].message().find("outside every registered region"), std::string::npos) << failures[0].ToString();
  EXPECT_EQ(Get(counters.session.unservable_faults), 1u);
  EXPECT_EQ(Get(counters.session.pages_copied) + Get(counters.session.zero_pages), 0u)
      << "nothing may be installed for an address the file does not back";
  // The fault is dropped, not answered: its thread stays blocked.
  EXPECT_EQ(WaitingFaults(vm->uffd), 1);
  EXPECT_FALSE(stray->done());

  // The session keeps serving faults it can serve.
  Worker* vcpu = Touch({vm->At(0, 2)});
  ASSERT_TRUE(ServeUntil(engine, vm->uffd, [&] { return vcpu->done(); }));
  EXPECT_EQ(Diff(vcpu->pages.at(0), file.Expected(2 * kPage)), "");
  EXPECT_FALSE(stray->done());
}

TEST_F(FaultEngineTest, CompletionInstallsEveryMissingPageAndTheMemoryReadsTheFileAfterUnregister) {
  // Region 0: 64 pages with a 20-page hole (a long zero stretch); region 1:
  // 40 pages with one page of zero data amid data.
  std::set<uint64_t> holes;
  for (uint64_t p = 30; p < 50; ++p) holes.insert(p);
  MemoryFile file(dir_ / "mem", 64 + 40, /*zero=*/{64 + 7}, holes);
  auto backing = OpenBacking(file);
  ASSERT_NE(backing, nullptr);
  const bool sparse = backing->IsHole(30 * kPage, 20 * kPage);
  TestVm* vm = NewVm({64, 40});
  ASSERT_NE(vm, nullptr);
  PageCache cache(64 << 20);
  Counters counters;
  auto engine_owner = MakeEngine(&vm->uffd, Layout(vm->memory.Mappings(), file.size()), backing, &cache,
                                 TestKey(*backing), counters.sink());
  ASSERT_NE(engine_owner, nullptr);
  FaultEngine& engine = *engine_owner;

  // A demand fault first: completion must go around a page already present.
  Worker* vcpu = Touch({vm->At(1, 3)});
  ASSERT_TRUE(ServeUntil(engine, vm->uffd, [&] { return vcpu->done(); }));
  ASSERT_EQ(engine.present_pages(), 1u);

  bool done = false;
  int steps = 0;
  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  while (!done) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "completion does not finish";
    ++steps;
    ServeReport report;
    Status st = engine.PopulateStep(16, &done, &report);
    ASSERT_TRUE(st.ok()) << st.ToString();
    ASSERT_FALSE(report.failure) << report.failure->ToString();
    ASSERT_FALSE(report.vm_gone);
    if (!done) WaitForWork(engine, /*completing=*/true);
  }
  EXPECT_GT(steps, 1) << "a step of 16 pages cannot have installed all 103";
  EXPECT_EQ(engine.present_pages(), 104u);
  EXPECT_EQ(Get(counters.session.completion_pages), 103u);
  EXPECT_EQ(Get(counters.session.faults), 1u);
  EXPECT_EQ(Get(counters.session.pages_copied) + Get(counters.session.zero_pages), 104u)
      << "every page installed exactly once";
  EXPECT_EQ(Get(counters.session.already_present), 0u);
  if (sparse) {
    EXPECT_GE(Get(counters.session.zero_pages), 20u) << "the hole goes in as zero pages";
    EXPECT_EQ(Get(counters.session.backing_bytes_read), (104 - 20) * kPage) << "holes are never read";
  }

  Status unregistered = engine.UnregisterAll();
  ASSERT_TRUE(unregistered.ok()) << unregistered.ToString();
  // Really unregistered: another userfaultfd may now register the regions
  // (a range still registered elsewhere is EBUSY).
  auto other = Userfaultfd::Create(O_CLOEXEC | O_NONBLOCK);
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  ASSERT_TRUE(other->NegotiateApi(0).ok());
  for (const auto& mapping : vm->memory.Mappings()) {
    auto reg = other->RegisterMissing(mapping.base_host_virt_addr, mapping.size);
    EXPECT_TRUE(reg.ok()) << "still registered after UnregisterAll: " << reg.status().ToString();
    if (reg.ok()) {
      ASSERT_TRUE(other->Unregister(mapping.base_host_virt_addr, mapping.size).ok());
    }
  }
  // Nothing is registered now: a page completion missed would read as zeros
  // here instead of blocking.
  for (size_t r = 0; r < 2; ++r) {
    const auto mapping = vm->memory.Mappings()[r];
    for (uint64_t p = 0; p < mapping.size / kPage; ++p) {
      ASSERT_EQ(Diff(vm->At(r, p), file.Expected(mapping.offset + p * kPage)), "") << "region " << r << " page " << p;
    }
  }
}

TEST_F(FaultEngineTest, CompletionCountsAPageInstalledBehindItsBackAsPresent) {
  // An adopted session does not know which pages the previous pager process
  // installed: a run meeting one (EEXIST) counts it and goes on after it.
  MemoryFile file(dir_ / "mem", 16);
  TestVm* vm = NewVm({16});
  ASSERT_NE(vm, nullptr);
  auto backing = OpenBacking(file);
  ASSERT_NE(backing, nullptr);
  PageCache cache(64 << 20);
  Counters counters;
  auto engine_owner = MakeEngine(&vm->uffd, Layout(vm->memory.Mappings(), file.size()), backing, &cache,
                                 TestKey(*backing), counters.sink());
  ASSERT_NE(engine_owner, nullptr);
  FaultEngine& engine = *engine_owner;
  std::vector<uint8_t> marker(kPage, 0xAB);
  UffdFillOutcome pre = vm->uffd.Copy(reinterpret_cast<uintptr_t>(vm->At(0, 5)), marker.data(), kPage);
  ASSERT_EQ(pre.error, 0) << std::strerror(pre.error);

  bool done = false;
  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  while (!done) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "completion does not finish";
    ServeReport report;
    Status st = engine.PopulateStep(512, &done, &report);
    ASSERT_TRUE(st.ok()) << st.ToString();
    if (!done) WaitForWork(engine, /*completing=*/true);
  }
  EXPECT_EQ(engine.present_pages(), 16u);
  EXPECT_EQ(Get(counters.session.already_present), 1u);
  EXPECT_EQ(Get(counters.session.pages_copied), 15u);
  ASSERT_TRUE(engine.UnregisterAll().ok());
  for (uint64_t p = 0; p < 16; ++p) {
    EXPECT_EQ(Diff(vm->At(0, p), p == 5 ? marker : file.Expected(p * kPage)), "") << "page " << p;
  }
}

TEST_F(FaultEngineTest, FaultAroundInstallsTheFollowingPagesOfAForwardWalkInOneRun) {
  MemoryFile file(dir_ / "mem", 32);
  TestVm* vm = NewVm({32});
  ASSERT_NE(vm, nullptr);
  auto backing = OpenBacking(file);
  ASSERT_NE(backing, nullptr);
  PageCache cache(64 << 20);
  Counters counters;
  FaultEngineOptions options;
  options.fault_around_max_pages = 8;
  auto engine_owner = MakeEngine(&vm->uffd, Layout(vm->memory.Mappings(), file.size()), backing, &cache,
                                 TestKey(*backing), counters.sink(), options);
  ASSERT_NE(engine_owner, nullptr);
  FaultEngine& engine = *engine_owner;

  std::vector<const uint8_t*> addrs;
  for (uint64_t p = 0; p < 32; ++p) addrs.push_back(vm->At(0, p));
  Worker* walker = Touch(addrs);
  ASSERT_TRUE(ServeUntil(engine, vm->uffd, [&] { return walker->done(); }));

  ASSERT_EQ(walker->pages.size(), 32u);
  for (uint64_t p = 0; p < 32; ++p) EXPECT_EQ(Diff(walker->pages[p], file.Expected(p * kPage)), "") << "page " << p;
  // The window starts at one page and doubles while the walk goes on, up to
  // 8: faults at pages 0 (1 page), 1 (2), 3 (4), 7 (8), 15 (8), 23 (8), and
  // 31 (the last page, alone).
  EXPECT_EQ(Get(counters.session.faults), 7u);
  EXPECT_EQ(Get(counters.session.fault_around_pages), 25u);
  EXPECT_EQ(Get(counters.session.faults) + Get(counters.session.fault_around_pages), 32u);
  EXPECT_EQ(Get(counters.session.pages_copied), 32u) << "no page twice";
  EXPECT_EQ(engine.present_pages(), 32u);
}

TEST_F(FaultEngineTest, FaultAroundAddsNothingToRandomAccess) {
  MemoryFile file(dir_ / "mem", 32);
  TestVm* vm = NewVm({32});
  ASSERT_NE(vm, nullptr);
  auto backing = OpenBacking(file);
  ASSERT_NE(backing, nullptr);
  PageCache cache(64 << 20);
  Counters counters;
  FaultEngineOptions options;
  options.fault_around_max_pages = 8;
  auto engine_owner = MakeEngine(&vm->uffd, Layout(vm->memory.Mappings(), file.size()), backing, &cache,
                                 TestKey(*backing), counters.sink(), options);
  ASSERT_NE(engine_owner, nullptr);
  FaultEngine& engine = *engine_owner;

  Worker* vcpu = Touch({vm->At(0, 20), vm->At(0, 5), vm->At(0, 12)});
  ASSERT_TRUE(ServeUntil(engine, vm->uffd, [&] { return vcpu->done(); }));
  EXPECT_EQ(Diff(vcpu->pages.at(1), file.Expected(5 * kPage)), "");
  EXPECT_EQ(Get(counters.session.faults), 3u);
  EXPECT_EQ(Get(counters.session.fault_around_pages), 0u);
  EXPECT_EQ(engine.present_pages(), 3u);
}

TEST_F(FaultEngineTest, APrefetchPlanInstallsItsPagesWithoutFaults) {
  // Region 1's bytes start 4 pages after region 0's: the 4 pages between are
  // in the file but no region maps them.
  MemoryFile file(dir_ / "mem", 8 + 4 + 12);
  TestVm* vm = NewVm({8, 12});
  ASSERT_NE(vm, nullptr);
  auto mappings = vm->memory.Mappings();
  mappings[1].offset = 12 * kPage;
  auto backing = OpenBacking(file);
  ASSERT_NE(backing, nullptr);
  PageCache cache(64 << 20);
  Counters counters;
  auto engine_owner =
      MakeEngine(&vm->uffd, Layout(mappings, file.size()), backing, &cache, TestKey(*backing), counters.sink());
  ASSERT_NE(engine_owner, nullptr);
  FaultEngine& engine = *engine_owner;

  // First-touch order, as recorded: interleaved regions, a duplicate, and an
  // offset no region maps (skipped).
  auto r1 = [](uint64_t p) { return (12 + p) * kPage; };
  const std::vector<uint64_t> plan = {r1(5), 2 * kPage, 3 * kPage, r1(6), 9 * kPage, 4 * kPage, r1(0), 2 * kPage};
  engine.SetPrefetchPlan(plan, kPage);
  ASSERT_TRUE(engine.prefetching());
  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  while (engine.prefetching()) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "prefetch does not finish";
    ServeReport report;
    engine.PrefetchStep(64, &report);
    ASSERT_FALSE(report.failure) << report.failure->ToString();
    WaitForWork(engine, /*completing=*/false);
  }
  EXPECT_EQ(Get(counters.session.prefetch_pages), 6u);
  EXPECT_EQ(engine.present_pages(), 6u) << "the plan's pages and no others";

  // Read them (serving in case one is missing): none may need a fault.
  std::vector<std::pair<size_t, uint64_t>> planned = {{1, 5}, {0, 2}, {0, 3}, {1, 6}, {0, 4}, {1, 0}};
  std::vector<const uint8_t*> addrs;
  for (auto [r, p] : planned) addrs.push_back(vm->At(r, p));
  Worker* vcpu = Touch(addrs);
  ASSERT_TRUE(ServeUntil(engine, vm->uffd, [&] { return vcpu->done(); }));
  EXPECT_EQ(Get(counters.session.faults), 0u);
  for (size_t i = 0; i < planned.size(); ++i) {
    auto [r, p] = planned[i];
    EXPECT_EQ(Diff(vcpu->pages.at(i), file.Expected(mappings[r].offset + p * kPage)), "")
        << "region " << r << " page " << p;
  }
}

TEST_F(FaultEngineTest, ASecondSessionOfTheSameFileIsServedFromTheCache) {
  MemoryFile file(dir_ / "mem", 16);
  auto backing = OpenBacking(file);
  ASSERT_NE(backing, nullptr);
  PageCache cache(64 << 20);
  FaultCounters global;
  FaultCounters first_session, second_session;
  const std::vector<uint64_t> touched = {0, 4, 5, 9};

  auto run_session = [&](FaultCounters* session) {
    TestVm* vm = NewVm({16});
    ASSERT_NE(vm, nullptr);
    auto engine_owner = MakeEngine(&vm->uffd, Layout(vm->memory.Mappings(), file.size()), backing, &cache,
                                   TestKey(*backing), CounterSink(session, &global));
    ASSERT_NE(engine_owner, nullptr);
    FaultEngine& engine = *engine_owner;
    std::vector<const uint8_t*> addrs;
    for (uint64_t p : touched) addrs.push_back(vm->At(0, p));
    Worker* vcpu = Touch(addrs);
    ASSERT_TRUE(ServeUntil(engine, vm->uffd, [&] { return vcpu->done(); }));
    for (size_t i = 0; i < touched.size(); ++i) {
      EXPECT_EQ(Diff(vcpu->pages.at(i), file.Expected(touched[i] * kPage)), "") << "page " << touched[i];
    }
  };
  ASSERT_NO_FATAL_FAILURE(run_session(&first_session));
  ASSERT_NO_FATAL_FAILURE(run_session(&second_session));

  EXPECT_EQ(Get(first_session.cache_misses), 4u);
  EXPECT_EQ(Get(first_session.backing_bytes_read), 4 * kPage);
  EXPECT_EQ(Get(second_session.cache_hits), 4u);
  EXPECT_EQ(Get(second_session.cache_misses), 0u);
  EXPECT_EQ(Get(second_session.backing_bytes_read), 0u);
  EXPECT_EQ(Get(second_session.pages_copied), 4u);
  EXPECT_EQ(Get(global.backing_bytes_read), 4 * kPage) << "the file is read once for both sessions";
  EXPECT_EQ(cache.Counters().misses, 4u);
  EXPECT_EQ(cache.Counters().hits, 4u);
}

// Two huge pages (hugetlb, 2 MiB): huge page 0 is data, huge page 1 a hole.
// hugetlb has no UFFDIO_ZEROPAGE, so the hole goes in as a copy of zeros.
// The data page is touched first. `spare` huge pages are reserved beyond the
// guest's two.
void FaultEngineTest::ServeTwoHugePages(long spare) {
  // Kept until the fixture is gone: a thread TearDown wakes from a fault
  // must still find a huge page to fault in.
  huge_pages_ = std::make_unique<testing::HugePageReservation>(2 + spare);
  if (!huge_pages_->ok()) GTEST_SKIP() << "the kernel refused to reserve " << 2 + spare << " huge pages of 2 MiB";
  long free_pages = -1;
  std::ifstream("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages") >> free_pages;
  if (spare == 0 && free_pages != 2) {
    GTEST_SKIP() << free_pages << " huge pages are free, not exactly " << 2 + spare
                 << ": pages beyond the reservation would hide what this test measures";
  }
  constexpr uint64_t kSubpages = kHugePageSize / kPage;
  std::set<uint64_t> holes;
  for (uint64_t p = kSubpages; p < 2 * kSubpages; ++p) holes.insert(p);
  MemoryFile file(dir_ / "mem", 2 * kSubpages, {}, holes);
  auto backing = OpenBacking(file);
  ASSERT_NE(backing, nullptr);
  TestVm* vm = NewVm({2}, 0, kHugePageSize);
  ASSERT_NE(vm, nullptr);
  PageCache cache(64 << 20);
  Counters counters;
  auto engine_owner = MakeEngine(&vm->uffd, Layout(vm->memory.Mappings(), file.size()), backing, &cache,
                                 TestKey(*backing), counters.sink());
  ASSERT_NE(engine_owner, nullptr);
  FaultEngine& engine = *engine_owner;

  uint8_t* base = vm->memory.region_data(0);
  Worker* vcpu = Touch({base + 100 * kPage, base + kHugePageSize + 7 * kPage});
  ASSERT_TRUE(ServeUntil(engine, vm->uffd, [&] { return vcpu->done(); }));

  // Both huge pages are in whole now: read every 4 KiB of them here.
  for (uint64_t p = 0; p < 2 * kSubpages; ++p) {
    ASSERT_EQ(Diff(base + p * kPage, file.Expected(p * kPage)), "") << "4 KiB page " << p;
  }
  EXPECT_EQ(Get(counters.session.faults), 2u);
  EXPECT_EQ(Get(counters.session.pages_copied), 1u);
  EXPECT_EQ(Get(counters.session.bytes_copied), kHugePageSize);
  EXPECT_EQ(Get(counters.session.zero_pages), 1u);
  EXPECT_EQ(Get(counters.session.copy_errors), 0u);
  if (backing->IsHole(kHugePageSize, kHugePageSize)) {
    EXPECT_EQ(Get(counters.session.backing_bytes_read), kHugePageSize) << "the hole must not be read";
  }
  EXPECT_EQ(engine.present_pages(), 2u);
}

TEST_F(FaultEngineTest, HugePagesAreCopiedWholeAndTheirZerosCopiedToo) { ServeTwoHugePages(/*spare=*/1); }

// The engine copies zero huge pages from a zero source. UFFDIO_COPY into
// hugetlb reads its source with page faults disabled; an unpopulated source
// sends the kernel down its slow path, which allocates a temporary huge page
// to copy through. A host that reserved exactly the guest's huge pages must
// still be served: the source is populated when it is mapped.
TEST_F(FaultEngineTest, AZeroHugePageNeedsNoSpareHugePage) { ServeTwoHugePages(/*spare=*/0); }

}  // namespace
}  // namespace fault_engine_test
}  // namespace uffdpager
