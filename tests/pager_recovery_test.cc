// Crash recovery: a pager killed with SIGKILL while VMs fault, restarted,
// takes its sessions back (records under DATA/uffd/VERSION/live/, fds from
// systemd's fd store) and serves on; what it cannot take back it reports.
#include <sys/mman.h>
#include <sys/wait.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "common/process_identity.h"
#include "support/child_vmm.h"
#include "support/fd_store_supervisor.h"
#include "support/pager_fixture.h"
#include "support/test_layers.h"
#include "support/vcpu_walkers.h"

namespace uffdpager::testing::recovery_test {
namespace {

constexpr uint64_t kMiB = 1ULL << 20;
const std::vector<uint64_t> kRegions = {8 * kMiB, 4 * kMiB};

// The session records under a pager's live/ directory. A record being
// rewritten shows, for a moment, as a temporary file beside it: not counted.
std::vector<std::filesystem::path> LiveRecordFiles(const std::string& live_dir) {
  std::vector<std::filesystem::path> records;
  for (const auto& e : std::filesystem::directory_iterator(live_dir)) {
    if (e.path().extension() == ".json") records.push_back(e.path());
  }
  return records;
}

class PagerRecoveryTest : public PagerFixture {
 protected:
  // Kills the pager as a crash would, and starts the same version again.
  void CrashAndRestart() {
    pager_->Kill(SIGKILL);
    ASSERT_TRUE(pager_->WaitForExit(std::chrono::seconds(10)));
    pager_.reset();
    StartPager();
  }
  size_t LiveRecords() { return LiveRecordFiles(pager_->root_dir() + "/live").size(); }
};

#ifdef UFFDPAGER_SANITIZER_BUILD
constexpr uint64_t kBigVmBytes = 16 * kMiB;
constexpr int kCrashes = 2;
#else
constexpr uint64_t kBigVmBytes = 48 * kMiB;
constexpr int kCrashes = 3;
#endif

// The pager under a stand-in for systemd (PID 1 here is not systemd): the
// same NOTIFY_SOCKET / FDSTORE / LISTEN_FDS protocol, so the pager's real
// crash recovery runs.
class PagerUnderSupervisorTest : public PagerFixture {
 protected:
  void StartSupervised() {
    FdStoreSupervisorOptions options;
    options.argv = {UFFD_PAGER_BIN,           "--data-dir", dir_.path(), "--version-key", "v1", "--log-level", "debug",
                    "--handshake-timeout-ms", "2000"};
    options.log_path = dir_ / "pager.log";
    auto started = FdStoreSupervisor::Start(options);
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    supervisor_ = std::move(*started);
    ASSERT_TRUE(supervisor_->WaitReady(std::chrono::seconds(20))) << supervisor_->Log();
    client_ = std::make_unique<PagerClient>(PagerClient::ControlSocketPath(dir_.path(), "v1"));
  }
  std::string root() { return dir_.path() + "/uffd/v1"; }
  std::string Create(const std::string& id, const std::string& backing) {
    CreateSessionRequest req = SessionRequest(id);
    req.backing_memory_path = backing;
    auto created = client_->CreateSession(req);
    EXPECT_TRUE(created.ok()) << created.status().ToString();
    return created.ok() ? created->uffd_socket_path : "";
  }
  size_t StoredWithSuffix(const std::string& suffix) {
    auto names = supervisor_->StoredNames();
    return std::count_if(names.begin(), names.end(), [&](const std::string& n) {
      return n.size() >= suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0;
    });
  }
  // The text of session `id`'s record file.
  std::string RecordText(const std::string& id) {
    for (const auto& record : LiveRecordFiles(root() + "/live")) {
      if (record.filename().string().rfind(id + ".", 0) == 0) {
        std::ifstream in(record);
        std::stringstream ss;
        ss << in.rdbuf();
        return ss.str();
      }
    }
    return "";
  }
  nlohmann::json SessionOf(const std::string& id) {
    auto s = client_->GetSession(id);
    EXPECT_TRUE(s.ok()) << id << ": " << s.status().ToString() << "\n" << supervisor_->Log();
    return s.ok() ? *s : nlohmann::json::object();
  }

  std::unique_ptr<FdStoreSupervisor> supervisor_;
  std::unique_ptr<PagerClient> client_;
};

TEST_F(PagerUnderSupervisorTest, KilledWhileVmsFaultTheRestartedPagerServesEveryByte) {
  StartSupervised();
  const std::vector<uint64_t> regions = {kBigVmBytes / 2, kBigVmBytes / 2};
  std::string snap_a = MakeSnapshot("mem-a", kBigVmBytes, 31);
  std::string snap_b = MakeSnapshot("mem-b", kBigVmBytes, 32);
  auto vm_a = VmmStandIn::Restore(Create("a", snap_a), regions);
  ASSERT_TRUE(vm_a.ok()) << vm_a.status().ToString();
  auto vm_b = VmmStandIn::Restore(Create("b", snap_b), regions);
  ASSERT_TRUE(vm_b.ok()) << vm_b.status().ToString();
  std::string waiting_socket = Create("w", snap_a);
  // Each serving session parked its uffd, connection and the VMM's pidfd;
  // the waiting one its listener.
  // (Messages arrive one by one: wait for the state after the last of them.)
  ASSERT_TRUE(WaitFor(
      [&] {
        return StoredWithSuffix(".uffd") == 2 && StoredWithSuffix(".conn") == 2 && StoredWithSuffix(".pidfd") == 2 &&
               StoredWithSuffix(".listen") == 1;
      },
      std::chrono::seconds(10)))
      << ::testing::PrintToString(supervisor_->StoredNames());
  EXPECT_EQ(supervisor_->StoredCount(), 7u) << ::testing::PrintToString(supervisor_->StoredNames());

  // A balloon takes a range of b; the record must carry it before the crash.
  const std::pair<uint64_t, uint64_t> removed = {5 * kMiB, 5 * kMiB + 16 * 4096};
  ASSERT_EQ(::madvise((*vm_b)->memory.AtFileOffset(removed.first), removed.second - removed.first, MADV_DONTNEED), 0);
  ASSERT_TRUE(
      WaitFor([&] { return RecordText("b").find("\"removed\":[[") != std::string::npos; }, std::chrono::seconds(10)))
      << RecordText("b");

  VcpuWalkers walk_a((*vm_a)->memory, 2);
  VcpuWalkers walk_b((*vm_b)->memory, 2);
  for (int crash = 0; crash < kCrashes; ++crash) {
    uint64_t a0 = walk_a.touched(), b0 = walk_b.touched();
    ASSERT_TRUE(
        WaitFor([&] { return walk_a.touched() > a0 + 200 && walk_b.touched() > b0 + 200; }, std::chrono::seconds(30)))
        << supervisor_->Log();
    auto killed_at = std::chrono::steady_clock::now();
    ASSERT_TRUE(supervisor_->KillAndRestart(SIGKILL).ok());
    ASSERT_TRUE(supervisor_->WaitReady(std::chrono::seconds(20))) << supervisor_->Log();
    std::cout
        << "crash " << crash << ": kill to READY=1 of the restarted pager, sessions adopted: "
        << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - killed_at).count()
        << " ms\n";
    for (const char* id : {"a", "b", "w"}) {
      auto s = SessionOf(id);
      EXPECT_EQ(s["origin"], "recovered after a pager restart") << s.dump();
      EXPECT_EQ(s["state"], std::string(id) == "w" ? "waiting" : "serving") << s.dump();
    }
  }
  // The VMs never noticed: they keep running, served by the last pager...
  uint64_t a0 = walk_a.touched(), b0 = walk_b.touched();
  EXPECT_TRUE(
      WaitFor([&] { return walk_a.touched() > a0 + 1000 && walk_b.touched() > b0 + 1000; }, std::chrono::seconds(30)))
      << supervisor_->Log();
  ASSERT_TRUE(walk_a.Stop()) << "a vCPU thread of a is stuck\n" << supervisor_->Log();
  ASSERT_TRUE(walk_b.Stop()) << "a vCPU thread of b is stuck\n" << supervisor_->Log();
  // ...with every byte right, and zeros where the balloon took memory.
  EXPECT_TRUE(MatchesSnapshotFile((*vm_a)->memory, snap_a));
  EXPECT_TRUE(MatchesSnapshotFile((*vm_b)->memory, snap_b, {removed}));
  uint64_t served_after = 0;
  for (const char* id : {"a", "b"}) served_after += SessionOf(id)["counters"]["faults"].get<uint64_t>();
  EXPECT_GT(served_after, 0u) << "the last pager served no fault: the crashes happened after the walk";

  // The VMM of the waiting session arrives after the crashes.
  auto vm_w = VmmStandIn::Restore(waiting_socket, regions);
  ASSERT_TRUE(vm_w.ok()) << vm_w.status().ToString() << "\n" << supervisor_->Log();
  TouchAllPages((*vm_w)->memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile((*vm_w)->memory, snap_a));

  // Closing the sessions empties the store and the records.
  for (const char* id : {"a", "b", "w"}) EXPECT_TRUE(client_->CloseSession(id).ok());
  EXPECT_TRUE(supervisor_->WaitForStoreSize(0, std::chrono::seconds(10)))
      << ::testing::PrintToString(supervisor_->StoredNames());
  EXPECT_TRUE(std::filesystem::is_empty(root() + "/live"));
  EXPECT_TRUE(supervisor_->Errors().empty()) << ::testing::PrintToString(supervisor_->Errors());
}

TEST_F(PagerUnderSupervisorTest, ABackingFileReplacedDuringTheCrashIsNeverServed) {
  StartSupervised();
  std::string snap = MakeSnapshot("mem", 12 * kMiB, 41);
  auto vm = VmmStandIn::Restore(Create("s", snap), kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  ASSERT_TRUE(WaitFor([&] { return StoredWithSuffix(".uffd") == 1 && StoredWithSuffix(".listen") == 0; },
                      std::chrono::seconds(10)));
  // Someone replaces the memory file (same path, another inode) while the
  // pager still serves the old one from its open fd; then the pager crashes.
  std::string other = MakeSnapshot("other", 12 * kMiB, 42);
  ASSERT_EQ(::rename(other.c_str(), snap.c_str()), 0);
  ASSERT_TRUE(supervisor_->KillAndRestart(SIGKILL).ok());
  ASSERT_TRUE(supervisor_->WaitReady(std::chrono::seconds(20))) << supervisor_->Log();
  // Serving the new file would hand the VM other bytes: the session is
  // failed, with the reason, instead.
  auto s = SessionOf("s");
  EXPECT_EQ(s["state"], "failed") << s.dump();
  EXPECT_NE(s.value("reason", "").find("is not the file the session began with"), std::string::npos) << s.dump();
  auto stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ((*stats)["failed_sessions"], 1);
  EXPECT_TRUE(client_->CloseSession("s").ok());
  EXPECT_TRUE(std::filesystem::is_empty(root() + "/live"));
}

TEST_F(PagerUnderSupervisorTest, AChainSessionIsServedOnAfterACrashUnlessALayerWasReplaced) {
  if (!FileSystemReportsHoles(dir_.path())) GTEST_SKIP() << dir_.path() << " does not report holes (SEEK_DATA)";
  StartSupervised();
  constexpr uint64_t kBytes = 12 * kMiB;
  const std::string base = MakeSnapshot("base", kBytes, 51);
  std::vector<uint8_t> image = ReadFileBytes(base);
  std::vector<uint64_t> lower, upper;
  for (uint64_t off = 0; off < kBytes; off += 4096) {
    if (off % (5 * 4096) == 0) lower.push_back(off);
    if (off % (7 * 4096) == 0) upper.push_back(off);
  }
  const std::vector<std::string> layers = {base, dir_ / "diff-1", dir_ / "diff-2"};
  ASSERT_TRUE(WriteTestLayer(layers[1], kBytes, lower, 52, &image));
  ASSERT_TRUE(WriteTestLayer(layers[2], kBytes, upper, 53, &image));
  const std::string expected = dir_ / "expected";
  std::ofstream(expected, std::ios::binary).write(reinterpret_cast<const char*>(image.data()), image.size());
  auto serve = [&](const std::string& id) -> std::unique_ptr<VmmStandIn> {
    CreateSessionRequest req = SessionRequest(id);
    req.backing_layers = layers;
    auto created = client_->CreateSession(req);
    EXPECT_TRUE(created.ok()) << created.status().ToString();
    if (!created.ok()) return nullptr;
    auto vm = VmmStandIn::Restore(created->uffd_socket_path, kRegions);
    EXPECT_TRUE(vm.ok()) << vm.status().ToString();
    return vm.ok() ? std::move(*vm) : nullptr;
  };
  auto vm = serve("c");
  ASSERT_NE(vm, nullptr);
  for (uint64_t off = 0; off < kBytes / 2; off += 4096)
    (void)*reinterpret_cast<volatile const uint8_t*>(vm->memory.AtFileOffset(off));
  ASSERT_TRUE(WaitFor([&] { return StoredWithSuffix(".uffd") == 1 && StoredWithSuffix(".listen") == 0; },
                      std::chrono::seconds(10)));
  ASSERT_NE(RecordText("c").find("diff-2"), std::string::npos) << "the record names the chain: " << RecordText("c");

  ASSERT_TRUE(supervisor_->KillAndRestart(SIGKILL).ok());
  ASSERT_TRUE(supervisor_->WaitReady(std::chrono::seconds(20))) << supervisor_->Log();
  auto s = SessionOf("c");
  EXPECT_EQ(s["state"], "serving") << s.dump();
  EXPECT_EQ(s["backing_layers"], nlohmann::json(layers));
  TouchAllPages(vm->memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile(vm->memory, expected));

  // A layer replaced (another inode at its path) while the pager was down:
  // serving it would give the VM other bytes.
  std::vector<uint8_t> scratch(kBytes);
  ASSERT_TRUE(WriteTestLayer(dir_ / "other", kBytes, upper, 54, &scratch));
  auto vm2 = serve("d");
  ASSERT_NE(vm2, nullptr);
  ASSERT_TRUE(WaitFor([&] { return StoredWithSuffix(".uffd") == 2; }, std::chrono::seconds(10)));
  ASSERT_EQ(::rename((dir_ / "other").c_str(), layers[2].c_str()), 0);
  ASSERT_TRUE(supervisor_->KillAndRestart(SIGKILL).ok());
  ASSERT_TRUE(supervisor_->WaitReady(std::chrono::seconds(20))) << supervisor_->Log();
  s = SessionOf("d");
  EXPECT_EQ(s["state"], "failed") << s.dump();
  EXPECT_NE(s.value("reason", "").find("is not the chain the session began with"), std::string::npos) << s.dump();
  EXPECT_EQ(SessionOf("c")["state"], "failed") << "c reads the replaced layer too";
}

TEST_F(PagerRecoveryTest, WithoutAnFdStoreARestartReportsWhatItLostAndKeepsWaitingSessions) {
  StartPager();
  std::string snap = MakeSnapshot("mem", 12 * kMiB, 5);
  auto vm = VmmStandIn::Restore(CreateSession("served", snap), kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  std::string waiting_socket = CreateSession("waiting", snap);
  // The handshake is one message with no reply: wait until the pager has
  // taken it (and recorded the session as serving) before crashing it.
  ASSERT_TRUE(WaitFor([&] { return SessionState("served") == "serving"; }, std::chrono::seconds(10)));
  EXPECT_EQ(LiveRecords(), 2u);

  CrashAndRestart();
  // The served VM's userfaultfd died with the pager (nothing kept it): the
  // session is reported failed, loudly, instead of vanishing.
  auto served = Session("served");
  EXPECT_EQ(served["state"], "failed") << served.dump();
  EXPECT_NE(served.value("reason", "").find("did not come back"), std::string::npos) << served.dump();
  EXPECT_EQ(Stat("failed_sessions"), 1u);
  // The waiting one listens again at the same path, and its VMM is served.
  EXPECT_EQ(SessionState("waiting"), "waiting");
  auto late = VmmStandIn::Restore(waiting_socket, kRegions);
  ASSERT_TRUE(late.ok()) << late.status().ToString() << "\n" << pager_->Log();
  TouchAllPages((*late)->memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile((*late)->memory, snap));

  // Closing the lost session forgets it for good.
  EXPECT_TRUE(pager_->client().CloseSession("served").ok());
  EXPECT_TRUE(pager_->client().CloseSession("waiting").ok());
  EXPECT_EQ(LiveRecords(), 0u);
}

TEST_F(PagerRecoveryTest, SessionsThatEndLeaveNoRecordBehind) {
  StartPager();
  std::string snap = MakeSnapshot("mem", 12 * kMiB, 6);
  CreateSession("waiting", snap);
  auto vm = VmmStandIn::Restore(CreateSession("served", snap), kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  ASSERT_TRUE(WaitFor([&] { return SessionState("served") == "serving"; }, std::chrono::seconds(10)));
  EXPECT_EQ(LiveRecords(), 2u);
  // Closed, waiting or serving: no record is left for a restarted pager to
  // report or serve.
  EXPECT_TRUE(pager_->client().CloseSession("waiting").ok());
  EXPECT_TRUE(pager_->client().CloseSession("served").ok());
  EXPECT_EQ(LiveRecords(), 0u) << pager_->Log();
}

// The record of session `id` under `live_dir`, parsed, and its path.
std::pair<std::filesystem::path, nlohmann::json> ReadRecord(const std::string& live_dir, const std::string& id) {
  for (const auto& record : LiveRecordFiles(live_dir)) {
    if (record.filename().string().rfind(id + ".", 0) != 0) continue;
    std::ifstream in(record);
    return {record, nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false)};
  }
  return {};
}

TEST_F(PagerRecoveryTest, WithoutAnFdStoreARestartedPagerKillsTheVmmsThatAskedForIt) {
  StartPager();
  std::string snap = MakeSnapshot("mem", 8 * kMiB, 7);
  const ChildVmmOptions options{.regions = {8 * kMiB}, .snapshot_path = snap};
  auto killed = ChildVmm::Start(CreateSession("killed", snap, "", /*kill_client_on_failure=*/true), options);
  ASSERT_TRUE(killed.ok()) << killed.status().ToString();
  auto spared = ChildVmm::Start(CreateSession("spared", snap, "", /*kill_client_on_failure=*/true), options);
  ASSERT_TRUE(spared.ok()) << spared.status().ToString();
  ASSERT_TRUE((*killed)->Verify(0).ok());
  ASSERT_TRUE((*spared)->Verify(0).ok());
  // The records name each VMM by pid and start time.
  const std::string live = pager_->root_dir() + "/live";
  for (auto& [id, vmm] : {std::pair{"killed", killed->get()}, std::pair{"spared", spared->get()}}) {
    auto identity = IdentifyProcess(vmm->pid());
    ASSERT_TRUE(identity.ok());
    auto [path, record] = ReadRecord(live, id);
    EXPECT_EQ(record.value("client_pid", 0), vmm->pid()) << record.dump();
    EXPECT_EQ(record.value("client_start_time", uint64_t{0}), identity->start_time) << record.dump();
  }

  pager_->Kill(SIGKILL);
  ASSERT_TRUE(pager_->WaitForExit(std::chrono::seconds(10)));
  pager_.reset();
  // Nobody serves them now: their next fault blocks.
  ASSERT_TRUE((*killed)->StartVerify(4 * kMiB).ok());
  ASSERT_TRUE((*spared)->StartVerify(4 * kMiB).ok());
  // "spared"'s pid has been reused since (as far as its record can tell): it
  // now names another process, started later (start times count in clock
  // ticks: a later tick than the VMM's).
  auto spared_identity = IdentifyProcess((*spared)->pid());
  ASSERT_TRUE(spared_identity.ok());
  ASSERT_TRUE(WaitFor([&] { return BootTicksNow() > spared_identity->start_time + 1; }));
  pid_t other = ::fork();
  if (other == 0) {
    ::pause();
    ::_exit(0);
  }
  auto [spared_path, spared_record] = ReadRecord(live, "spared");
  spared_record["client_pid"] = other;
  std::ofstream(spared_path) << spared_record.dump();

  StartPager();
  for (const char* id : {"killed", "spared"}) {
    auto s = Session(id);
    EXPECT_EQ(s["state"], "failed") << s.dump();
    EXPECT_NE(s.value("reason", "").find("did not come back"), std::string::npos) << s.dump();
  }
  // The VMM that asked for it is killed rather than left blocked forever...
  int status = 0;
  ASSERT_TRUE((*killed)->WaitForExit(std::chrono::seconds(10), &status)) << pager_->Log();
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  // ...and a process that merely has a recorded pid is not.
  EXPECT_EQ(::waitpid(other, nullptr, WNOHANG), 0) << "the process that reused the pid was killed";
  EXPECT_TRUE((*spared)->Running());
  EXPECT_NE(pager_->Log().find("not the VMM"), std::string::npos) << pager_->Log();
  ::kill(other, SIGKILL);
  ::waitpid(other, nullptr, 0);
}

TEST_F(PagerRecoveryTest, ACorruptRecordIsSetAsideAndThePagerStarts) {
  StartPager();
  std::string live = pager_->root_dir() + "/live";
  pager_->Kill(SIGKILL);
  ASSERT_TRUE(pager_->WaitForExit(std::chrono::seconds(10)));
  pager_.reset();
  for (const auto& [name, text] :
       std::vector<std::pair<std::string, std::string>>{{"x.1.json", "{not json"},
                                                        {"y.2.json", R"({"format": 1, "session_id": "y"})"},
                                                        {"z.3.json", R"({"format": 99})"}}) {
    std::ofstream(live + "/" + name) << text;
  }
  StartPager();
  auto sessions = pager_->client().ListSessions();
  ASSERT_TRUE(sessions.ok()) << sessions.status().ToString();
  EXPECT_TRUE(sessions->empty()) << sessions->dump();
  EXPECT_EQ(LiveRecords(), 0u);
  EXPECT_NE(pager_->Log().find("discarding unreadable session record"), std::string::npos);
}

}  // namespace
}  // namespace uffdpager::testing::recovery_test
