// Fault-around: a demand fault also installs the missing pages after it,
// with a window that grows on sequential access and never crosses a removed
// range. Bytes stay exact; faults drop.
#include <sys/mman.h>

#include <cstring>
#include <thread>

#include "support/pager_fixture.h"

namespace uffdpager::testing::fault_around_test {
namespace {

constexpr uint64_t kMiB = 1ULL << 20;
const std::vector<uint64_t> kRegions = {8 * kMiB, 4 * kMiB};
constexpr uint64_t kPages = 12 * kMiB / 4096;

class PagerFaultAroundTest : public PagerFixture {
 protected:
  void SetUp() override {
    PagerFixture::SetUp();
    if (IsSkipped()) return;
    PagerProcessOptions options;
    options.fault_around_max_pages = 64;
    StartPager(options);
  }
};

TEST_F(PagerFaultAroundTest, ASequentialWalkTakesFarFewerFaults) {
  std::string snap = MakeSnapshot("mem", 12 * kMiB, 41);
  auto vm = VmmStandIn::Restore(CreateSession("seq", snap), kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  uint64_t sum = 0;
  for (uint64_t p = 0; p < kPages; ++p)
    sum += *reinterpret_cast<volatile uint8_t*>((*vm)->memory.AtFileOffset(p * 4096));
  (void)sum;
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap));
  auto c = Session("seq")["counters"];
  EXPECT_LT(c["faults"].get<uint64_t>(), kPages / 8) << c.dump();
  EXPECT_GT(c["fault_around_pages"].get<uint64_t>(), kPages / 2) << c.dump();
  EXPECT_EQ(c["pages_copied"].get<uint64_t>() + c["zero_pages"].get<uint64_t>(), kPages);
  EXPECT_EQ(c["backing_bytes_read"].get<uint64_t>(), 12 * kMiB);
}

TEST_F(PagerFaultAroundTest, InterleavedSequentialThreadsEachGetTheirWindow) {
  std::string snap = MakeSnapshot("mem", 12 * kMiB, 44);
  auto vm = VmmStandIn::Restore(CreateSession("streams", snap), kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  // Four "vCPUs" each walk their own quarter forward, at the same time.
  std::vector<std::thread> walkers;
  for (uint64_t t = 0; t < 4; ++t) {
    walkers.emplace_back([&, t] {
      uint64_t sum = 0;
      for (uint64_t p = t * kPages / 4; p < (t + 1) * kPages / 4; ++p) {
        sum += *reinterpret_cast<volatile uint8_t*>((*vm)->memory.AtFileOffset(p * 4096));
      }
      (void)sum;
    });
  }
  for (auto& w : walkers) w.join();
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap));
  auto c = Session("streams")["counters"];
  EXPECT_LT(c["faults"].get<uint64_t>(), kPages / 4) << c.dump();
}

TEST_F(PagerFaultAroundTest, NeverInstallsSnapshotBytesInARemovedRange) {
  std::string snap = MakeSnapshot("mem", 12 * kMiB, 42);
  auto vm = VmmStandIn::Restore(CreateSession("rm", snap), kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  const GuestMemory& mem = (*vm)->memory;
  // Discard ranges ahead of the walk (never touched) and inside it.
  std::vector<std::pair<uint64_t, uint64_t>> removed = {{1 * kMiB + 12 * 4096, 1 * kMiB + 20 * 4096},
                                                        {9 * kMiB, 9 * kMiB + 4096}};
  for (const auto& [s, e] : removed) ASSERT_EQ(::madvise(mem.AtFileOffset(s), e - s, MADV_DONTNEED), 0);
  std::thread walker([&] {
    uint64_t sum = 0;
    for (uint64_t p = 0; p < kPages; ++p) sum += *reinterpret_cast<volatile uint8_t*>(mem.AtFileOffset(p * 4096));
    (void)sum;
  });
  // And one while it walks.
  removed.push_back({6 * kMiB, 6 * kMiB + 64 * 4096});
  ASSERT_EQ(::madvise(mem.AtFileOffset(6 * kMiB), 64 * 4096, MADV_DONTNEED), 0);
  walker.join();
  EXPECT_TRUE(MatchesSnapshotFile(mem, snap, removed));
}

TEST_F(PagerFaultAroundTest, RandomAccessFromManyThreadsStaysExact) {
  std::string snap = MakeSnapshot("mem", 12 * kMiB, 43);
  auto vm = VmmStandIn::Restore(CreateSession("rand", snap), kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  TouchAllPages((*vm)->memory, 4);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap));
  auto c = Session("rand")["counters"];
  EXPECT_EQ(c["copy_errors"], 0);
  EXPECT_EQ(c["unservable_faults"], 0);
}

}  // namespace
}  // namespace uffdpager::testing::fault_around_test
