// Restores through a real uffd-pager: every handshake generation, faults
// from threads and from the kernel, writes, removes, huge pages, and many
// clients sharing the cache. Memory is checked byte for byte against the
// snapshot file.
#include <fcntl.h>
#include <linux/mman.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <thread>

#include "common/unique_fd.h"
#include "support/huge_pages.h"
#include "support/pager_fixture.h"

namespace uffdpager::testing::restore_test {
namespace {

constexpr uint64_t kMiB = 1ULL << 20;
// Two regions with cumulative offsets, as Firecracker has once memory
// crosses its MMIO hole.
const std::vector<uint64_t> kRegions = {8 * kMiB, 4 * kMiB};
constexpr uint64_t kGuestBytes = 12 * kMiB;

class PagerRestoreTest : public PagerFixture {};

struct DialectCase {
  HandshakeDialect dialect;
  bool keep_socket_open;
  const char* name;
};

class PagerDialectTest : public PagerFixture, public ::testing::WithParamInterface<DialectCase> {};

TEST_P(PagerDialectTest, ServesEveryPageExactlyToConcurrentThreads) {
  StartPager();
  std::string snap = MakeSnapshot("mem", kGuestBytes, 1);
  std::string sock = CreateSession("s1", snap);
  VmmHandshakeOptions opts;
  opts.dialect = GetParam().dialect;
  opts.keep_socket_open = GetParam().keep_socket_open;
  auto vm = VmmStandIn::Restore(sock, kRegions, 4096, opts);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  TouchAllPages((*vm)->memory, 4);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap));

  auto s = Session("s1");
  EXPECT_EQ(s["state"], "serving");
  EXPECT_EQ(s["regions"], 2);
  EXPECT_EQ(s["present_pages"], kGuestBytes / 4096);
  const auto& c = s["counters"];
  // Every page went in once: snapshot bytes by UFFDIO_COPY, zero pages
  // (every 7th page of the generated file) by UFFDIO_ZEROPAGE.
  EXPECT_EQ(c["pages_copied"].get<uint64_t>() + c["zero_pages"].get<uint64_t>(), kGuestBytes / 4096);
  EXPECT_EQ(c["zero_pages"].get<uint64_t>(), kGuestBytes / 4096 / 7);
  EXPECT_GE(c["faults"].get<uint64_t>(), kGuestBytes / 4096);
  EXPECT_EQ(c["copy_errors"], 0);
  EXPECT_EQ(c["unservable_faults"], 0);
  EXPECT_EQ(c["backing_bytes_read"].get<uint64_t>(), kGuestBytes);
}

INSTANTIATE_TEST_SUITE_P(Firecracker, PagerDialectTest,
                         ::testing::Values(DialectCase{HandshakeDialect::kV1_1, false, "v1_1_closes_socket"},
                                           DialectCase{HandshakeDialect::kV1_7, false, "v1_7_closes_socket"},
                                           DialectCase{HandshakeDialect::kV1_12, true, "v1_12_keeps_socket"},
                                           DialectCase{HandshakeDialect::kV1_12, false, "v1_12_closes_socket"}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST_F(PagerRestoreTest, KernelSideAccessIsServedToo) {
  StartPager();
  std::string snap = MakeSnapshot("mem", kGuestBytes, 2);
  auto vm = VmmStandIn::Restore(CreateSession("k", snap), kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  const GuestMemory& mem = (*vm)->memory;
  auto file = ReadFileBytes(snap);

  // read(2) INTO a guest page the VM never touched: the kernel's
  // copy_to_user takes the fault, the pager serves it, then the kernel writes.
  int pipe_in[2];
  ASSERT_EQ(::pipe(pipe_in), 0);
  std::string payload = "written by the kernel into guest memory";
  ASSERT_EQ(::write(pipe_in[1], payload.data(), payload.size()), ssize_t(payload.size()));
  uint64_t in_off = 9 * kMiB + 5 * 4096 + 100;  // in region 1
  ASSERT_EQ(::read(pipe_in[0], mem.AtFileOffset(in_off), payload.size()), ssize_t(payload.size()));
  std::memcpy(&file[in_off], payload.data(), payload.size());

  // write(2) OUT OF a guest page the VM never touched: copy_from_user faults.
  int pipe_out[2];
  ASSERT_EQ(::pipe(pipe_out), 0);
  uint64_t out_off = 3 * kMiB;
  ASSERT_EQ(::write(pipe_out[1], mem.AtFileOffset(out_off), 4096), 4096);
  std::vector<uint8_t> got(4096);
  ASSERT_EQ(::read(pipe_out[0], got.data(), got.size()), 4096);
  EXPECT_EQ(0, std::memcmp(got.data(), &file[out_off], 4096)) << "write(2) out of guest memory saw wrong bytes";
  for (int fd : {pipe_in[0], pipe_in[1], pipe_out[0], pipe_out[1]}) ::close(fd);

  // The page read(2) filled holds the payload inside snapshot bytes.
  EXPECT_EQ(0, std::memcmp(mem.AtFileOffset(in_off & ~4095ULL), &file[in_off & ~4095ULL], 4096));
}

TEST_F(PagerRestoreTest, AWriteBeforeAnyReadKeepsTheRestOfThePage) {
  StartPager();
  std::string snap = MakeSnapshot("mem", kGuestBytes, 3);
  auto vm = VmmStandIn::Restore(CreateSession("w", snap), kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  auto file = ReadFileBytes(snap);
  uint64_t off = 10 * kMiB + 7 * 4096;
  uint64_t marker = 0xfeedfacecafebeefULL;
  std::memcpy((*vm)->memory.AtFileOffset(off + 8), &marker, sizeof(marker));  // first touch is a write
  std::memcpy(&file[off + 8], &marker, sizeof(marker));
  EXPECT_EQ(0, std::memcmp((*vm)->memory.AtFileOffset(off), &file[off], 4096));
}

TEST_F(PagerRestoreTest, RemovedRangesReadAsZerosWhileOtherThreadsFault) {
  StartPager();
  std::string snap = MakeSnapshot("mem", kGuestBytes, 4);
  auto vm = VmmStandIn::Restore(CreateSession("r", snap), kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  const GuestMemory& mem = (*vm)->memory;
  // File-offset ranges the "balloon" discards: some the guest has read,
  // some it has not, one crossing into region 1.
  std::vector<std::pair<uint64_t, uint64_t>> removed = {{0, 64 * 4096},
                                                        {2 * kMiB, 2 * kMiB + 300 * 4096},
                                                        {8 * kMiB - 16 * 4096, 8 * kMiB},
                                                        {8 * kMiB, 8 * kMiB + 64 * 4096},
                                                        {11 * kMiB, 11 * kMiB + 4096}};
  std::atomic<bool> stop{false};
  std::vector<std::thread> faulters;
  for (int t = 0; t < 3; ++t) {
    faulters.emplace_back([&, t] {
      uint64_t pages = kGuestBytes / 4096, sum = 0;
      for (uint64_t i = 0; !stop.load() && i < pages * 2; ++i) {
        sum += *reinterpret_cast<volatile uint8_t*>(mem.AtFileOffset(((i * 7919 + t * 1237) % pages) * 4096));
      }
      (void)sum;
    });
  }
  for (const auto& [s, e] : removed) {
    // madvise blocks until the pager reads the remove event.
    ASSERT_EQ(::madvise(mem.AtFileOffset(s), e - s, MADV_DONTNEED), 0) << std::strerror(errno);
  }
  for (auto& f : faulters) f.join();
  EXPECT_TRUE(MatchesSnapshotFile(mem, snap, removed));
  auto c = Session("r")["counters"];
  EXPECT_EQ(c["remove_events"].get<uint64_t>(), removed.size());
  EXPECT_EQ(c["unservable_faults"], 0);
  EXPECT_EQ(c["copy_errors"], 0);
}

TEST_F(PagerRestoreTest, ManyClientsOfTwoSnapshotsReadEachPageFromDiskOnce) {
  StartPager();
  std::string a = MakeSnapshot("a.mem", kGuestBytes, 5);
  std::string b = MakeSnapshot("b.mem", kGuestBytes, 6);
  constexpr int kClientsPerSnapshot = 3;
  std::vector<std::unique_ptr<VmmStandIn>> vms;
  std::vector<std::string> backing;
  for (int i = 0; i < 2 * kClientsPerSnapshot; ++i) {
    const std::string& snap = i % 2 == 0 ? a : b;
    auto vm = VmmStandIn::Restore(CreateSession("c" + std::to_string(i), snap, i % 2 ? "key-b" : "key-a"), kRegions);
    ASSERT_TRUE(vm.ok()) << vm.status().ToString();
    vms.push_back(std::move(*vm));
    backing.push_back(snap);
  }
  std::vector<std::thread> clients;
  for (auto& vm : vms) clients.emplace_back([&vm] { TouchAllPages(vm->memory, 2); });
  for (auto& c : clients) c.join();
  for (size_t i = 0; i < vms.size(); ++i)
    EXPECT_TRUE(MatchesSnapshotFile(vms[i]->memory, backing[i])) << "client " << i;
  // Single-flight plus a cache that holds everything: each page of each
  // snapshot came from disk exactly once; the other clients got it from memory.
  EXPECT_EQ(Stat("backing_bytes_read"), 2 * kGuestBytes);
  EXPECT_EQ(Stat("cache_misses"), 2 * kGuestBytes / 4096);
  EXPECT_GE(Stat("cache_hits"), 2 * (kClientsPerSnapshot - 1) * kGuestBytes / 4096);
}

TEST_F(PagerRestoreTest, SameCacheKeyOnDifferentFilesNeverSharesBytes) {
  StartPager();
  std::string a = MakeSnapshot("a.mem", kGuestBytes, 7);
  std::string b = MakeSnapshot("b.mem", kGuestBytes, 8);
  auto va = VmmStandIn::Restore(CreateSession("a", a, "same-key"), kRegions);
  ASSERT_TRUE(va.ok());
  TouchAllPages((*va)->memory, 2);
  auto vb = VmmStandIn::Restore(CreateSession("b", b, "same-key"), kRegions);
  ASSERT_TRUE(vb.ok());
  TouchAllPages((*vb)->memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile((*va)->memory, a));
  EXPECT_TRUE(MatchesSnapshotFile((*vb)->memory, b)) << "a VM read another snapshot's bytes";
}

// A snapshot with zero pages and two punched holes, as a sparse Diff
// snapshot or a copy with SEEK_HOLE has.
struct SparseSnapshot {
  std::string path;
  uint64_t hole_pages = 0;
  uint64_t zero_pages = 0;  // holes included
};

const std::vector<std::pair<uint64_t, uint64_t>> kHoles = {{2 * kMiB, 3 * kMiB}, {9 * kMiB, 9 * kMiB + 512 * 1024}};

// Fails the test, or skips it where the filesystem reports no holes.
void MakeSparseSnapshot(std::string path, SparseSnapshot* out) {
  {
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    ASSERT_TRUE(fd.valid());
    for (const auto& [s, e] : kHoles) {
      ASSERT_EQ(::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, s, e - s), 0) << std::strerror(errno);
    }
    if (::lseek(fd.get(), 0, SEEK_HOLE) != off_t(2 * kMiB)) GTEST_SKIP() << "this filesystem does not report holes";
  }
  auto file = ReadFileBytes(path);
  out->path = std::move(path);
  for (uint64_t off = 0; off < kGuestBytes; off += 4096) {
    bool in_hole = false;
    for (const auto& [s, e] : kHoles) in_hole |= off >= s && off < e;
    out->hole_pages += in_hole;
    out->zero_pages += std::all_of(&file[off], &file[off] + 4096, [](uint8_t b) { return b == 0; });
  }
}

// Restores the sparse snapshot through a pager started with `options`,
// touches every page and checks every byte; returns the session's counters
// (a fatal failure or a skip returns early: callers check).
class PagerSparseRestoreTest : public PagerFixture {
 protected:
  nlohmann::json ServeSparseSnapshot(PagerProcessOptions options, SparseSnapshot* snap) {
    StartPager(std::move(options));
    MakeSparseSnapshot(MakeSnapshot("sparse.mem", kGuestBytes, 10), snap);
    if (IsSkipped() || HasFatalFailure()) return {};
    auto vm = VmmStandIn::Restore(CreateSession("z", snap->path), kRegions);
    EXPECT_TRUE(vm.ok()) << vm.status().ToString();
    if (!vm.ok()) return {};
    TouchAllPages((*vm)->memory, 2);
    EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap->path));
    auto c = Session("z")["counters"];
    EXPECT_EQ(c["backing_bytes_read"].get<uint64_t>(), kGuestBytes - snap->hole_pages * 4096) << "a hole was read";
    return c;
  }
};

TEST_F(PagerSparseRestoreTest, ZeroPagesAndHolesAreNeverReadOrCopiedAsBytes) {
  SparseSnapshot snap;
  auto c = ServeSparseSnapshot({}, &snap);
  if (IsSkipped() || HasFailure()) return;
  EXPECT_EQ(c["zero_pages"].get<uint64_t>(), snap.zero_pages);
  EXPECT_EQ(c["pages_copied"].get<uint64_t>(), kGuestBytes / 4096 - snap.zero_pages);
  EXPECT_EQ(Stat("cache_zero_items"), snap.zero_pages);
}

TEST_F(PagerSparseRestoreTest, WithZeroPagesCopiedZerosAreServedAsData) {
  // --zero-pages copy switches detection off, to measure what it saves: every
  // page is read (holes as zeros, without a read), cached and copied.
  SparseSnapshot snap;
  auto c = ServeSparseSnapshot({.extra_args = {"--zero-pages", "copy"}}, &snap);
  if (IsSkipped() || HasFailure()) return;
  ASSERT_GT(snap.zero_pages, snap.hole_pages) << "the snapshot must also hold zero pages that are data";
  EXPECT_EQ(c["zero_pages"].get<uint64_t>(), 0u);
  EXPECT_EQ(c["pages_copied"].get<uint64_t>(), kGuestBytes / 4096);
  EXPECT_EQ(Stat("cache_zero_items"), 0u);
  EXPECT_GE(Stat("cache_bytes"), kGuestBytes) << "zero pages are kept as data";

  // Completion, which copies from a mapping of the file, copies them too.
  auto vm = VmmStandIn::Restore(CreateSession("c", snap.path), kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  ASSERT_TRUE(WaitFor([&] { return SessionState("c") == "serving"; }));
  ASSERT_TRUE(pager_->client().CompleteSession("c").ok());
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap.path));
  auto completed = Session("c")["counters"];
  EXPECT_EQ(completed["zero_pages"].get<uint64_t>(), 0u);
  EXPECT_EQ(completed["pages_copied"].get<uint64_t>(), kGuestBytes / 4096);
}

TEST_F(PagerRestoreTest, HugePagesAreServedIn2MiBUnits) {
  HugePageReservation reservation(8);
  if (!reservation.ok()) GTEST_SKIP() << "the kernel refused to reserve 8 huge pages of 2 MiB";
  StartPager();
  std::string snap = MakeSnapshot("huge.mem", kGuestBytes, 9);
  auto vm = VmmStandIn::Restore(CreateSession("h", snap), kRegions, 2 * kMiB);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  TouchAllPages((*vm)->memory, 3);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap));
  auto c = Session("h")["counters"];
  EXPECT_EQ(c["pages_copied"].get<uint64_t>(), kGuestBytes / (2 * kMiB));
  EXPECT_EQ(c["bytes_copied"].get<uint64_t>(), kGuestBytes);
  // A removed huge page reads as zeros afterwards (hugetlb has no ZEROPAGE).
  ASSERT_EQ(::madvise((*vm)->memory.AtFileOffset(2 * kMiB), 2 * kMiB, MADV_DONTNEED), 0) << std::strerror(errno);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap, {{2 * kMiB, 4 * kMiB}}));
}

}  // namespace
}  // namespace uffdpager::testing::restore_test
