// Boot, run, pause, snapshot, restore (File and Uffd through a real
// uffd-pager), resume: the guest continues exactly where it was, and its
// checksums and memory are what the host-side model computes from the
// memory file.
#include <sys/stat.h>
#include <sys/wait.h>

#include <filesystem>

#include "support/huge_pages.h"
#include "tinyvmm_fixture.h"

namespace uffdpager::vmm::testing {
namespace {

class TinyVmmRestoreTest : public TinyVmmTest {
 protected:
  // Boots a 2-vCPU, 32 MiB guest (two regions), runs it, pauses it and
  // writes the Full snapshot s1.state / s1.mem.
  void MakeFullSnapshot(bool track_dirty_pages) {
    VmmInstance& vm = StartVmm("source");
    Boot(vm, 2, 32, track_dirty_pages);
    WaitForSteps(vm, 500);
    Pause(vm);
    json at_pause = Guest(vm);
    Snapshot(vm, "s1.state", "s1.mem");
    SnapshotState s1 = ReadState("s1.state");
    ASSERT_EQ(s1.vcpus.size(), 2u);
    ASSERT_EQ(s1.layout.regions.size(), 2u) << "the test guest should cross the hole";
    EXPECT_EQ(s1.layout.regions[1].gpa, 32 * kMiB);
    for (size_t i = 0; i < 2; ++i) {
      // Paused at a step boundary: what the guest last reported is what
      // its registers hold.
      EXPECT_EQ(s1.vcpus[i].progress.step, at_pause["vcpus"][i]["step"].get<uint32_t>());
      EXPECT_EQ(s1.vcpus[i].progress.checksum, at_pause["vcpus"][i]["checksum"].get<uint32_t>());
    }
    struct stat st {};
    ASSERT_EQ(::stat(Path("s1.mem").c_str(), &st), 0);
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), 32 * kMiB);
  }

  // After a restore that has not run yet, the guest is exactly at s1.
  void ExpectAtSnapshot(VmmInstance& vm, const std::string& state) {
    SnapshotState s = ReadState(state);
    json g = Guest(vm);
    ASSERT_EQ(g["vcpus"].size(), s.vcpus.size());
    for (size_t i = 0; i < s.vcpus.size(); ++i) {
      EXPECT_EQ(g["vcpus"][i]["step"].get<uint32_t>(), s.vcpus[i].progress.step);
      EXPECT_EQ(g["vcpus"][i]["checksum"].get<uint32_t>(), s.vcpus[i].progress.checksum);
    }
  }

  void RunFurtherAndSnapshot(VmmInstance& vm, const std::string& from_state, const std::string& state,
                             const std::string& mem) {
    SnapshotState s = ReadState(from_state);
    Resume(vm);
    WaitForSteps(vm, s.vcpus[0].progress.step + 1000);
    Pause(vm);
    Snapshot(vm, state, mem);
  }
};

TEST_F(TinyVmmRestoreTest, BootedGuestMatchesTheModel) {
  MakeFullSnapshot(false);
  VmmInstance& vm = *vmms_[0];
  RunFurtherAndSnapshot(vm, "s1.state", "s1b.state", "s1b.mem");
  ExpectModelMatches("s1.state", "s1.mem", "s1b.state", "s1b.mem");

  // The check is not vacuous: one wrong byte in any walked page, or a wrong
  // checksum, fails it — also through `tinyvmm --verify`.
  std::vector<uint8_t> bytes = ReadBytes(Path("s1b.mem"));
  bytes[20 * kMiB + 12345] ^= 1;
  std::ofstream(Path("bad.mem"), std::ios::binary).write(reinterpret_cast<char*>(bytes.data()), bytes.size());
  EXPECT_FALSE(VerifyGuestProgress(Path("s1.state"), Path("s1.mem"), Path("s1b.state"), Path("bad.mem")).ok());
  auto run_verify = [&](const std::string& mem) {
    auto p = ChildProcess::Spawn(
        {TINYVMM_BIN, "--verify", Path("s1.state"), Path("s1.mem"), Path("s1b.state"), Path(mem)}, Path("verify.log"));
    EXPECT_TRUE(p.ok());
    int status = -1;
    EXPECT_TRUE(p->WaitForExit(30s, &status));
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  EXPECT_EQ(run_verify("s1b.mem"), 0);
  EXPECT_EQ(run_verify("bad.mem"), 1);
  Answer info = Call(vm, "GET", "/");
  EXPECT_EQ(info.body["state"], "Paused");
  EXPECT_EQ(info.body["stalled"], false);
}

TEST_F(TinyVmmRestoreTest, RestoreFromFileContinuesExactly) {
  MakeFullSnapshot(false);
  VmmInstance& vm = StartVmm("restored");
  LoadFile(vm, "s1.state", "s1.mem", /*resume=*/false);
  EXPECT_EQ(Call(vm, "GET", "/").body["state"], "Paused");
  ExpectAtSnapshot(vm, "s1.state");
  RunFurtherAndSnapshot(vm, "s1.state", "s2.state", "s2.mem");
  ExpectModelMatches("s1.state", "s1.mem", "s2.state", "s2.mem");
  // The VMM wrote the new generation into guest memory during the load.
  std::vector<uint8_t> mem = ReadBytes(Path("s2.mem"));
  uint64_t generation;
  std::memcpy(&generation, mem.data() + kGenerationGpa, 8);
  EXPECT_EQ(generation, 1u);
  // The memory file itself is never changed by running a File-backed VM.
  EXPECT_EQ(ReadBytes(Path("s1.mem")).size(), 32 * kMiB);
}

TEST_F(TinyVmmRestoreTest, RestoreThroughThePagerContinuesExactly) {
  MakeFullSnapshot(false);
  StartPager();
  std::string socket = PagerSession("restore-1", "s1.mem");
  ASSERT_FALSE(socket.empty());
  VmmInstance& vm = StartVmm("restored");
  LoadUffd(vm, "s1.state", socket, /*resume=*/true);
  EXPECT_EQ(Call(vm, "GET", "/").body["state"], "Running");
  RunFurtherAndSnapshot(vm, "s1.state", "s2.state", "s2.mem");
  ExpectModelMatches("s1.state", "s1.mem", "s2.state", "s2.mem");
  auto sessions = pager_client_->ListSessions();
  ASSERT_TRUE(sessions.ok()) << sessions.status().ToString();
  ASSERT_EQ(sessions->size(), 1u);
  EXPECT_EQ((*sessions)[0].value("state", ""), "serving") << sessions->dump();
  auto stats = pager_client_->Stats();
  ASSERT_TRUE(stats.ok());
  // The Full snapshot read all of guest memory, so the pager served it all.
  EXPECT_GT(stats->value("copies", uint64_t{0}), 0u) << stats->dump();
}

TEST_F(TinyVmmRestoreTest, DiffOnARestoredVmMergesExactly) {
  MakeFullSnapshot(true);
  StartPager();
  std::string socket = PagerSession("fork-1", "s1.mem");
  ASSERT_FALSE(socket.empty());
  VmmInstance& fork = StartVmm("fork");
  LoadUffd(fork, "s1.state", socket, /*resume=*/true, /*track=*/true);
  SnapshotState s1 = ReadState("s1.state");
  WaitForSteps(fork, s1.vcpus[0].progress.step + 600);
  Pause(fork);
  // The fork owns a copy of the source's memory; the Diff goes into it.
  std::filesystem::copy_file(Path("s1.mem"), Path("fork.mem"));
  Snapshot(fork, "d1.state", "fork.mem", "Diff");
  ExpectModelMatches("s1.state", "s1.mem", "d1.state", "fork.mem");
  std::vector<uint8_t> merged = ReadBytes(Path("fork.mem"));
  uint64_t generation;
  std::memcpy(&generation, merged.data() + kGenerationGpa, 8);
  EXPECT_EQ(generation, 1u) << "the VMM's own write during load must be in the Diff";

  // Restore from the merged file and keep going: still exact.
  VmmInstance& again = StartVmm("again");
  LoadFile(again, "d1.state", "fork.mem", /*resume=*/false, /*track=*/true);
  ExpectAtSnapshot(again, "d1.state");
  RunFurtherAndSnapshot(again, "d1.state", "d2.state", "d2.mem");
  ExpectModelMatches("d1.state", "fork.mem", "d2.state", "d2.mem");

  // A Diff into a new file is sparse and holds only what changed since the
  // last snapshot (the Full d2): merged over d2.mem it gives the model.
  Resume(again);
  WaitForSteps(again, ReadState("d2.state").vcpus[0].progress.step + 300);
  Pause(again);
  Snapshot(again, "d3.state", "d3.diff", "Diff");
  struct stat st {};
  ASSERT_EQ(::stat(Path("d3.diff").c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), 32 * kMiB);
  EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, 16 * kMiB) << "a Diff into a new file must be sparse";
  std::vector<uint8_t> diff = ReadBytes(Path("d3.diff"));
  std::vector<uint8_t> base = ReadBytes(Path("d2.mem"));
  int fd = ::open(Path("d3.diff").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  for (off_t at = 0;;) {
    off_t data = ::lseek(fd, at, SEEK_DATA);
    if (data < 0) break;
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    std::memcpy(base.data() + data, diff.data() + data, static_cast<size_t>(hole - data));
    at = hole;
  }
  ::close(fd);
  std::ofstream(Path("d3.merged"), std::ios::binary).write(reinterpret_cast<const char*>(base.data()), base.size());
  ExpectModelMatches("d2.state", "d2.mem", "d3.state", "d3.merged");
}

TEST_F(TinyVmmRestoreTest, HugePageGuestRestoresThroughThePagerIn2MiBPages) {
  // Source (32 MiB) and restored guest (32 MiB) in 2 MiB pages, plus slack.
  ::uffdpager::testing::HugePageReservation reservation(40);
  if (!reservation.ok()) GTEST_SKIP() << "the kernel refused to reserve 40 huge pages of 2 MiB";
  VmmInstance& source = StartVmm("huge-source");
  ExpectNoContent(source, "PUT", "/machine-config", {{"vcpu_count", 2}, {"mem_size_mib", 32}, {"huge_pages", "2M"}});
  ExpectNoContent(source, "PUT", "/actions", {{"action_type", "InstanceStart"}});
  WaitForSteps(source, 300);
  Pause(source);
  Snapshot(source, "h1.state", "h1.mem");

  StartPager();
  std::string socket = PagerSession("huge-restore", "h1.mem");
  ASSERT_FALSE(socket.empty());
  VmmInstance& vm = StartVmm("huge-restored");
  LoadUffd(vm, "h1.state", socket, /*resume=*/true);
  RunFurtherAndSnapshot(vm, "h1.state", "h2.state", "h2.mem");
  ExpectModelMatches("h1.state", "h1.mem", "h2.state", "h2.mem");
  auto sessions = pager_client_->ListSessions();
  ASSERT_TRUE(sessions.ok());
  ASSERT_EQ(sessions->size(), 1u);
  const auto& c = (*sessions)[0]["counters"];
  // Every page went in as a whole 2 MiB page.
  EXPECT_GT(c["pages_copied"].get<uint64_t>(), 0u);
  EXPECT_EQ(c["bytes_copied"].get<uint64_t>(), c["pages_copied"].get<uint64_t>() * 2 * kMiB) << c.dump();
  EXPECT_EQ(c["copy_errors"], 0);
}

}  // namespace
}  // namespace uffdpager::vmm::testing
