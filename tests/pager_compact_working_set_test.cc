// Compact working sets: after a restore records its working set, the pager
// copies those pages, in replay order, into one file beside the record;
// later restores read it in a few large reads. What it serves must be
// byte-exact whatever the guest, the balloon and the VMM do meanwhile, and a
// compact file that is stale, damaged, cut short or never written must never
// be served (the restore reads the memory file instead).
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <thread>

#include "support/pager_fixture.h"
#include "support/scoped_tmpfs.h"

namespace uffdpager::testing::compact_working_set_test {
namespace {

constexpr uint64_t kMiB = 1ULL << 20;
const std::vector<uint64_t> kRegions = {8 * kMiB, 4 * kMiB};
constexpr uint64_t kBytes = 12 * kMiB;
constexpr uint64_t kPages = kBytes / 4096;

// A third of the pages, spread out, always the same.
std::vector<uint64_t> WorkingSetPages() { return SpreadPages(kPages, 11); }

// Every number the pager logged after `what` ("recorded a working set of N
// pages"), in order.
std::vector<uint64_t> LoggedCounts(const std::string& log, const std::string& what) {
  std::vector<uint64_t> out;
  const std::regex re(what + " ([0-9]+)");
  for (auto it = std::sregex_iterator(log.begin(), log.end(), re); it != std::sregex_iterator(); ++it) {
    out.push_back(std::stoull((*it)[1].str()));
  }
  return out;
}

// Whether each of `pages` of `memory` holds the snapshot's bytes (touching
// only those pages, so nothing else faults).
::testing::AssertionResult PagesMatch(const GuestMemory& memory, const std::vector<uint8_t>& snapshot,
                                      const std::vector<uint64_t>& pages) {
  for (uint64_t p : pages) {
    if (std::memcmp(memory.AtFileOffset(p * 4096), snapshot.data() + p * 4096, 4096) != 0) {
      return ::testing::AssertionFailure() << "page " << p << " differs from the snapshot";
    }
  }
  return ::testing::AssertionSuccess();
}

class PagerCompactWorkingSetTest : public PagerFixture {
 protected:
  void SetUp() override {
    PagerFixture::SetUp();
    if (IsSkipped()) return;
    snap_ = MakeSnapshot("mem", kBytes, 61);
  }

  void Start(std::vector<std::string> extra = {}, const std::string& record_ms = "300") {
    options_.extra_args = {"--prefetch-record-ms", record_ms};
    options_.extra_args.insert(options_.extra_args.end(), extra.begin(), extra.end());
    StartPager(options_);
  }

  // A new pager process on the same data directory, as after a host
  // restart: records and compact files stay, the memory cache is empty.
  void RestartPager() {
    pager_.reset();
    StartPager(options_);
  }

  std::string WorkingSetsDir() { return pager_->root_dir() + "/working-sets"; }

  std::string FileWith(const std::string& extension) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(WorkingSetsDir(), ec)) {
      if (e.path().extension() == extension) return e.path().string();
    }
    return "";
  }

  // Restores, touches the working set, and waits until the pager has
  // recorded it and (if `compact`) written its compact copy, and then
  // restarts the pager: its cache would serve the next replay without
  // reading the compact file.
  void RecordingRestore(const std::string& id, bool compact = true) {
    auto vm = VmmStandIn::Restore(CreateSession(id, snap_, "key"), kRegions);
    ASSERT_TRUE(vm.ok()) << vm.status().ToString();
    TouchPages((*vm)->memory, WorkingSetPages());
    ASSERT_TRUE(WaitFor([&] { return pager_->Log().find("recorded a working set") != std::string::npos; },
                        std::chrono::seconds(30)))
        << pager_->Log();
    if (compact) {
      ASSERT_TRUE(WaitFor([&] { return !FileWith(".pages").empty(); }, std::chrono::seconds(30))) << pager_->Log();
    }
    EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap_));
    ASSERT_TRUE(pager_->client().CloseSession(id).ok());
    vm->reset();
    if (compact) RestartPager();
  }

  // A restore that replays: touches everything while `during` runs, checks
  // every byte (zeros in `removed`), and returns the session's counters.
  nlohmann::json ReplayingRestore(const std::string& id, const std::function<void(const GuestMemory&)>& during = {},
                                  std::vector<std::pair<uint64_t, uint64_t>>* removed = nullptr) {
    auto vm = VmmStandIn::Restore(CreateSession(id, snap_, "key"), kRegions);
    EXPECT_TRUE(vm.ok()) << vm.status().ToString();
    if (!vm.ok()) return {};
    std::thread toucher([&] { TouchAllPages((*vm)->memory, 2); });
    if (during) during((*vm)->memory);
    toucher.join();
    EXPECT_TRUE(
        MatchesSnapshotFile((*vm)->memory, snap_, removed ? *removed : std::vector<std::pair<uint64_t, uint64_t>>{}));
    auto s = Session(id);
    EXPECT_EQ(s["state"], "serving") << s.dump();
    return s["counters"];
  }

  std::string snap_;
  PagerProcessOptions options_;
};

TEST_F(PagerCompactWorkingSetTest, AReplayFromTheCompactFileIsByteExactWithRemovesDuringIt) {
  Start();
  RecordingRestore("first");
  std::vector<std::pair<uint64_t, uint64_t>> removed;
  auto c = ReplayingRestore(
      "second",
      [&](const GuestMemory& memory) {
        // A balloon discards ranges inside the working set while the
        // replay installs it: they must read as zeros, never as snapshot
        // bytes, whoever got to them first.
        for (uint64_t off = 0; off < kBytes; off += kMiB) {
          const uint64_t start = off + 256 * 1024;
          ASSERT_EQ(::madvise(memory.AtFileOffset(start), 32 * 4096, MADV_DONTNEED), 0) << std::strerror(errno);
          removed.emplace_back(start, start + 32 * 4096);
        }
      },
      &removed);
  EXPECT_EQ(c["compact_replays"], 1) << c.dump();
  EXPECT_EQ(c["compact_fallbacks"], 0) << c.dump();
  EXPECT_GT(c["working_set_bytes_read"].get<uint64_t>(), 0u) << c.dump();
  EXPECT_GT(c["prefetch_pages"].get<uint64_t>(), 0u) << c.dump();
}

TEST_F(PagerCompactWorkingSetTest, AFaultAheadOfTheReplayIsServedFromItsCompactBlockNotTheMemoryFile) {
  Start();
  RecordingRestore("first");
  auto vm = VmmStandIn::Restore(CreateSession("second", snap_, "key"), kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  // The working set backwards: its last blocks first, ahead of a replay that
  // reads them in order. Each such fault has its block read at once and
  // waits for it; no page of the working set is read from the memory file.
  std::vector<uint64_t> pages = WorkingSetPages();
  std::reverse(pages.begin(), pages.end());
  TouchPages((*vm)->memory, pages);
  EXPECT_TRUE(PagesMatch((*vm)->memory, ReadFileBytes(snap_), pages));
  auto c = Session("second")["counters"];
  EXPECT_EQ(c["compact_replays"], 1) << c.dump();
  EXPECT_EQ(c["compact_fallbacks"], 0) << c.dump();
  EXPECT_EQ(c["backing_bytes_read"], 0) << c.dump();
  TouchAllPages((*vm)->memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap_));
}

TEST_F(PagerCompactWorkingSetTest, PagesTheVmmWritesDuringTheLoadAreNeverOverwritten) {
  Start();
  RecordingRestore("first");
  auto vm = VmmStandIn::Restore(CreateSession("second", snap_, "key"), kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  // As Firecracker writes VMGenID right after the handshake: the write
  // faults the page in (or finds it replayed) and then changes it; a replay
  // that comes later must leave it alone.
  std::vector<uint64_t> written;
  for (uint64_t p : WorkingSetPages()) {
    if (written.size() == 64) break;
    if (p % 5 == 0) written.push_back(p);
  }
  for (uint64_t p : written) std::memset((*vm)->memory.AtFileOffset(p * 4096) + 100, 0xEE, 16);
  ASSERT_TRUE(WaitFor(
      [&] {
        return Session("second")["counters"]["prefetch_pages"].get<uint64_t>() > 0 &&
               Session("second")["counters"]["compact_replays"] == 1;
      },
      std::chrono::seconds(30)))
      << Session("second").dump();
  // Give the replay the time to install everything it holds.
  const uint64_t wanted = WorkingSetPages().size();
  WaitFor(
      [&] {
        auto c = Session("second")["counters"];
        return c["prefetch_pages"].get<uint64_t>() + c["faults"].get<uint64_t>() >= wanted;
      },
      std::chrono::seconds(30));
  for (uint64_t p : written) {
    const uint8_t* page = (*vm)->memory.AtFileOffset(p * 4096);
    ASSERT_TRUE(std::all_of(page + 100, page + 116, [](uint8_t b) { return b == 0xEE; }))
        << "the VMM's write to page " << p << " was overwritten";
  }
  TouchAllPages((*vm)->memory, 2);
  // Everything but the written bytes is the snapshot's (the written ones were
  // checked above): put the snapshot's bytes back there, and compare all.
  const std::vector<uint8_t> file = ReadFileBytes(snap_);
  for (uint64_t p : written) std::memcpy((*vm)->memory.AtFileOffset(p * 4096) + 100, &file[p * 4096 + 100], 16);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap_));
}

TEST_F(PagerCompactWorkingSetTest, ACompactFileOfAReplacedMemoryFileIsNeverServed) {
  Start();
  RecordingRestore("first");
  // The memory file is rewritten: same path, same cache key, other bytes.
  ASSERT_TRUE(WriteTestSnapshot(snap_, kBytes, 62));
  struct timespec times[2] = {{0, UTIME_NOW}, {0, UTIME_NOW}};
  ASSERT_EQ(::utimensat(AT_FDCWD, snap_.c_str(), times, 0), 0);
  auto c = ReplayingRestore("after-change");
  EXPECT_EQ(c["compact_replays"], 0) << c.dump();
  EXPECT_EQ(c["prefetch_pages"], 0) << "a stale working set was replayed: " << c.dump();
}

TEST_F(PagerCompactWorkingSetTest, ADamagedCompactFileIsNotServedAndTheRestoreIsExact) {
  Start();
  RecordingRestore("first");
  std::string pages = FileWith(".pages");
  ASSERT_FALSE(pages.empty());
  const uint64_t size = std::filesystem::file_size(pages);
  // One byte of page data flipped, deep in the file: that block (and the
  // ones after it) are read from the memory file instead.
  {
    std::fstream f(pages, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(size - 3 * 4096 + 17));
    char b = 0;
    f.read(&b, 1);
    b = static_cast<char>(b ^ 0x40);
    f.seekp(static_cast<std::streamoff>(size - 3 * 4096 + 17));
    f.write(&b, 1);
  }
  auto c = ReplayingRestore("damaged");
  EXPECT_EQ(c["compact_fallbacks"], 1) << c.dump();
  EXPECT_NE(pager_->Log().find("does not match its hash"), std::string::npos) << pager_->Log();

  // Cut short: refused at once.
  ASSERT_EQ(::truncate(pages.c_str(), static_cast<off_t>(size / 2)), 0);
  c = ReplayingRestore("truncated");
  EXPECT_EQ(c["compact_replays"], 0) << c.dump();
  EXPECT_EQ(c["compact_fallbacks"], 1) << c.dump();
  EXPECT_GT(c["prefetch_pages"].get<uint64_t>(), 0u) << "the record is still replayed from the memory file";
  EXPECT_TRUE(FileWith(".pages").empty()) << "a compact file that cannot be trusted is removed";
}

TEST_F(PagerCompactWorkingSetTest, AFullDiskWhileWritingOneLeavesTheRestoreUnaffected) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a small tmpfs as the working-set directory";
  Start();
  // The working sets go to a 256 KiB tmpfs: the record (a few KiB) fits,
  // its compact copy (megabytes) does not.
  ScopedTmpfs small(WorkingSetsDir(), "256k");
  if (!small.mounted()) GTEST_SKIP() << small.error();
  RecordingRestore("first", /*compact=*/false);
  ASSERT_TRUE(WaitFor([&] { return Stat("working_set_write_errors") == 1; }, std::chrono::seconds(30)))
      << pager_->Log();
  EXPECT_TRUE(FileWith(".pages").empty());
  EXPECT_TRUE(FileWith(".tmp").empty()) << "a failed write leaves nothing behind";
  auto c = ReplayingRestore("second");
  EXPECT_EQ(c["compact_fallbacks"], 1) << c.dump();
  EXPECT_GT(c["prefetch_pages"].get<uint64_t>(), 0u) << c.dump();
}

TEST_F(PagerCompactWorkingSetTest, ReplaysAndDemandFaultsAtOnceAllProgress) {
  Start();
  RecordingRestore("first");
  // Four restores replay the compact file while four others (other cache
  // keys: nothing recorded) fault every page on demand. Every faulting
  // thread must get through all of its pages, byte-exact.
  std::vector<std::string> others;
  for (int i = 0; i < 4; ++i) others.push_back(MakeSnapshot("other" + std::to_string(i), kBytes, 70 + i));
  std::vector<std::unique_ptr<VmmStandIn>> vms;
  std::vector<std::string> files;
  for (int i = 0; i < 8; ++i) {
    const bool replays = i % 2 == 0;
    const std::string file = replays ? snap_ : others[i / 2];
    auto vm = VmmStandIn::Restore(
        CreateSession("vm" + std::to_string(i), file, replays ? "key" : "other" + std::to_string(i)), kRegions);
    ASSERT_TRUE(vm.ok()) << vm.status().ToString();
    vms.push_back(std::move(*vm));
    files.push_back(file);
  }
  std::atomic<int> finished{0};
  std::vector<std::thread> threads;
  for (auto& vm : vms) {
    threads.emplace_back([&, m = &vm->memory] {
      TouchAllPages(*m, 2);
      finished++;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(finished.load(), 8);
  for (size_t i = 0; i < vms.size(); ++i) {
    EXPECT_TRUE(MatchesSnapshotFile(vms[i]->memory, files[i])) << "vm" << i;
  }
  for (int i = 0; i < 8; i += 2) {
    EXPECT_EQ(Session("vm" + std::to_string(i))["counters"]["compact_replays"], 1) << i;
  }
}

// A record keeps up with its guest: a replay of a record older than the
// refine interval (0 here) holds back a sample of it and records again. The
// refined record is the record without the sample, plus what the guest
// faulted: a page the guest no longer touches ages out, a new one joins.
TEST_F(PagerCompactWorkingSetTest, ARefiningReplayAgesOutUntouchedPagesAndAddsNewOnes) {
  // The record window outlasts each restore: it ends when the session closes.
  Start({"--working-set-refine-seconds", "0"}, "600000");
  const std::vector<uint8_t> snapshot = ReadFileBytes(snap_);
  const std::vector<uint64_t> before = WorkingSetPages();
  std::vector<uint64_t> after;  // pages the guest touches now: none of `before`
  for (uint64_t p = 1; p < kPages; p += 7) {
    if (!std::binary_search(before.begin(), before.end(), p)) after.push_back(p);
  }
  auto restore_touch_close = [&](const std::string& id, const std::vector<uint64_t>& pages, size_t records) {
    auto vm = VmmStandIn::Restore(CreateSession(id, snap_, "key"), kRegions);
    ASSERT_TRUE(vm.ok()) << vm.status().ToString();
    TouchPages((*vm)->memory, pages);
    EXPECT_TRUE(PagesMatch((*vm)->memory, snapshot, pages));
    ASSERT_TRUE(pager_->client().CloseSession(id).ok());
    ASSERT_TRUE(WaitFor([&] { return LoggedCounts(pager_->Log(), "recorded a working set of").size() == records; },
                        std::chrono::seconds(30)))
        << pager_->Log();
  };
  restore_touch_close("first", before, 1);
  ASSERT_EQ(LoggedCounts(pager_->Log(), "recorded a working set of").back(), before.size());

  restore_touch_close("second", after, 2);
  const auto held = LoggedCounts(pager_->Log(), "refining the working set:");
  ASSERT_EQ(held.size(), 1u) << pager_->Log();
  // One page in 16 of a thousand: none held back would be a broken sample.
  EXPECT_GT(held[0], 0u);
  EXPECT_LT(held[0], before.size() / 4);
  // The held-back pages were not touched again: they left. Every page the
  // guest touched (none of them recorded before) joined.
  EXPECT_EQ(LoggedCounts(pager_->Log(), "recorded a working set of").back(), before.size() - held[0] + after.size());

  // The guest touches both sets: what this replay held back is not installed
  // by it, so it faults and stays, and what aged out joins again.
  std::vector<uint64_t> both = before;
  both.insert(both.end(), after.begin(), after.end());
  restore_touch_close("third", both, 3);
  EXPECT_EQ(LoggedCounts(pager_->Log(), "refining the working set:").size(), 2u);
  EXPECT_EQ(LoggedCounts(pager_->Log(), "recorded a working set of").back(), both.size());
}

// Pages one replay read from the compact file go into the shared cache: the
// next replay of the key (here, one after the other; at once, they wait for
// the one read) takes them from there and reads nothing.
TEST_F(PagerCompactWorkingSetTest, PagesOneReplayReadServeTheNextFromTheCache) {
  Start();
  RecordingRestore("first");
  const std::vector<uint64_t> pages = WorkingSetPages();
  {
    auto vm = VmmStandIn::Restore(CreateSession("second", snap_, "key"), kRegions);
    ASSERT_TRUE(vm.ok()) << vm.status().ToString();
    // Nothing touches memory: only the replay brings pages in.
    ASSERT_TRUE(WaitFor([&] { return Session("second")["counters"]["prefetch_pages"].get<uint64_t>() >= pages.size(); },
                        std::chrono::seconds(60)))
        << Session("second").dump();
    auto c = Session("second")["counters"];
    EXPECT_EQ(c["faults"], 0) << c.dump();
    EXPECT_EQ(c["compact_blocks_from_cache"], 0) << c.dump();
    EXPECT_GE(c["working_set_bytes_read"].get<uint64_t>(), pages.size() * 4096) << c.dump();
    EXPECT_TRUE(PagesMatch((*vm)->memory, ReadFileBytes(snap_), pages));
    ASSERT_TRUE(pager_->client().CloseSession("second").ok());
  }
  auto c = ReplayingRestore("third");
  EXPECT_EQ(c["compact_replays"], 1) << c.dump();
  EXPECT_EQ(c["working_set_bytes_read"], 0) << c.dump();
  const uint64_t blocks = (pages.size() + 255) / 256;
  EXPECT_EQ(c["compact_blocks_from_cache"], blocks) << c.dump();
}

TEST_F(PagerCompactWorkingSetTest, ARecordYoungerThanTheRefineIntervalIsReplayedWhole) {
  Start();  // the default interval: a minute
  RecordingRestore("first");
  ReplayingRestore("second");
  EXPECT_EQ(pager_->Log().find("refining the working set"), std::string::npos) << pager_->Log();
  EXPECT_EQ(Session("second")["counters"]["working_set_refinements"], 0);
}

}  // namespace
}  // namespace uffdpager::testing::compact_working_set_test
