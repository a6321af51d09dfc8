// Working-set record and replay: the first restore of a cache key records
// what it faulted; later restores get those pages prefetched while they run.
// A record never outlives a change of its backing file.
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "support/pager_fixture.h"

namespace uffdpager::testing::prefetch_test {
namespace {

constexpr uint64_t kMiB = 1ULL << 20;
const std::vector<uint64_t> kRegions = {8 * kMiB, 4 * kMiB};
constexpr uint64_t kPages = 12 * kMiB / 4096;

// A third of the pages, spread out, always the same.
std::vector<uint64_t> WorkingSetPages() { return SpreadPages(kPages, 7); }

class PagerPrefetchTest : public PagerFixture {
 protected:
  void SetUp() override {
    PagerFixture::SetUp();
    if (IsSkipped()) return;
    PagerProcessOptions options;
    options.extra_args = {"--prefetch", "--prefetch-record-ms", "300"};
    StartPager(options);
    snap_ = MakeSnapshot("mem", 12 * kMiB, 51);
  }

  // Restores, touches the working set, and waits until the session has
  // recorded it (the record window closes 300 ms after the handshake).
  void RecordingRestore(const std::string& id) {
    auto vm = VmmStandIn::Restore(CreateSession(id, snap_, "key"), kRegions);
    ASSERT_TRUE(vm.ok()) << vm.status().ToString();
    TouchPages((*vm)->memory, WorkingSetPages());
    ASSERT_TRUE(WaitFor([&] { return pager_->Log().find("recorded a working set") != std::string::npos; },
                        std::chrono::seconds(30)))
        << pager_->Log();
    EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap_));
    ASSERT_TRUE(pager_->client().CloseSession(id).ok());
  }

  std::string RecordFile() {
    for (const auto& e : std::filesystem::directory_iterator(pager_->root_dir() + "/working-sets")) {
      if (e.path().extension() == ".wset") return e.path().string();
    }
    return "";
  }

  std::string snap_;
};

TEST_F(PagerPrefetchTest, ALaterRestoreGetsTheRecordedWorkingSetBeforeItAsks) {
  RecordingRestore("first");
  ASSERT_FALSE(RecordFile().empty());

  auto vm = VmmStandIn::Restore(CreateSession("second", snap_, "key"), kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  const uint64_t wanted = WorkingSetPages().size();
  // Prefetch runs while the "guest" is idle; it never blocked the handshake.
  ASSERT_TRUE(WaitFor([&] { return Session("second")["counters"]["prefetch_pages"].get<uint64_t>() >= wanted; },
                      std::chrono::seconds(60)))
      << Session("second").dump();
  TouchPages((*vm)->memory, WorkingSetPages());
  auto c = Session("second")["counters"];
  EXPECT_EQ(c["faults"].get<uint64_t>(), 0u) << "the working set was not all prefetched: " << c.dump();
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap_));
  // Pages outside the working set were still served on demand, exactly.
  EXPECT_GE(Session("second")["counters"]["faults"].get<uint64_t>(), kPages - wanted);
}

TEST_F(PagerPrefetchTest, PrefetchRacingFaultsAndRemovesLeavesEveryByteRight) {
  RecordingRestore("first");
  ASSERT_FALSE(RecordFile().empty());
  auto vm = VmmStandIn::Restore(CreateSession("racing", snap_, "key"), kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  const GuestMemory& memory = (*vm)->memory;
  // While the prefetcher installs the working set, two threads fault every
  // page and a balloon removes ranges inside the working set. A removed range
  // must read as zeros afterwards, whoever got to its pages first.
  std::thread toucher([&] { TouchAllPages(memory, 2); });
  std::vector<std::pair<uint64_t, uint64_t>> removed;
  for (uint64_t off = 0; off < 12 * kMiB; off += kMiB) {
    const uint64_t start = off + 128 * 1024;
    ASSERT_EQ(::madvise(memory.AtFileOffset(start), 16 * 4096, MADV_DONTNEED), 0) << std::strerror(errno);
    removed.emplace_back(start, start + 16 * 4096);
  }
  toucher.join();
  EXPECT_TRUE(MatchesSnapshotFile(memory, snap_, removed));
  for (const auto& [start, end] : removed) {
    for (uint64_t off = start; off < end; off += 4096) {
      const uint8_t* page = memory.AtFileOffset(off);
      ASSERT_TRUE(std::all_of(page, page + 4096, [](uint8_t b) { return b == 0; }))
          << "removed page at " << off << " holds snapshot bytes";
    }
  }
  auto s = Session("racing");
  EXPECT_EQ(s["state"], "serving") << s.dump();
  // It replayed (who got to each page first, the replay or a fault, is the
  // scheduler's choice: a busy machine can let the faults take them all).
  EXPECT_EQ(s["counters"]["compact_replays"].get<uint64_t>() + s["counters"]["compact_fallbacks"].get<uint64_t>(), 1u)
      << s.dump();
}

TEST_F(PagerPrefetchTest, ARecordIsDiscardedWhenTheBackingFileChanges) {
  RecordingRestore("first");
  ASSERT_FALSE(RecordFile().empty());
  // Rewrite the snapshot in place: same path, same key, new content.
  ASSERT_TRUE(WriteTestSnapshot(snap_, 12 * kMiB, 52));
  struct timespec times[2] = {{0, UTIME_NOW}, {0, UTIME_NOW}};
  ASSERT_EQ(::utimensat(AT_FDCWD, snap_.c_str(), times, 0), 0);
  auto vm = VmmStandIn::Restore(CreateSession("after-change", snap_, "key"), kRegions);
  ASSERT_TRUE(vm.ok());
  TouchPages((*vm)->memory, WorkingSetPages());
  EXPECT_EQ(Session("after-change")["counters"]["prefetch_pages"], 0) << "a stale record was replayed";
  EXPECT_NE(pager_->Log().find("changed since it was recorded"), std::string::npos);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap_));
}

TEST_F(PagerPrefetchTest, ACorruptRecordIsIgnored) {
  RecordingRestore("first");
  std::string record = RecordFile();
  ASSERT_FALSE(record.empty());
  {
    std::fstream f(record, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(40);
    f.put('\x5a');
  }
  auto vm = VmmStandIn::Restore(CreateSession("after-corruption", snap_, "key"), kRegions);
  ASSERT_TRUE(vm.ok());
  TouchPages((*vm)->memory, WorkingSetPages());
  EXPECT_EQ(Session("after-corruption")["counters"]["prefetch_pages"], 0);
  EXPECT_NE(pager_->Log().find("checksum mismatch"), std::string::npos);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap_));
}

}  // namespace
}  // namespace uffdpager::testing::prefetch_test
