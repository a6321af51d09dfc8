// Crash recovery: a pager killed with SIGKILL while VMs fault, restarted,
// takes its sessions back (records under DATA/uffd/VERSION/live/, fds from
// systemd's fd store) and serves on; what it cannot take back it reports.
#include <sys/mman.h>

#include <filesystem>
#include <fstream>

#include "support/pager_fixture.h"

namespace uffdpager::testing {
namespace {

constexpr uint64_t kMiB = 1ULL << 20;
const std::vector<uint64_t> kRegions = {8 * kMiB, 4 * kMiB};

class PagerRecoveryTest : public PagerFixture {
 protected:
  // Kills the pager as a crash would, and starts the same version again.
  void CrashAndRestart() {
    pager_->Kill(SIGKILL);
    ASSERT_TRUE(pager_->WaitForExit(std::chrono::seconds(10)));
    pager_.reset();
    StartPager();
  }
  size_t LiveRecords() {
    size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(pager_->root_dir() + "/live")) ++n;
    return n;
  }
};

TEST_F(PagerRecoveryTest, WithoutAnFdStoreARestartReportsWhatItLostAndKeepsWaitingSessions) {
  StartPager();
  std::string snap = MakeSnapshot("mem", 12 * kMiB, 5);
  auto vm = VmmStandIn::Restore(CreateSession("served", snap), kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  std::string waiting_socket = CreateSession("waiting", snap);
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

TEST_F(PagerRecoveryTest, ACorruptRecordIsSetAsideAndThePagerStarts) {
  StartPager();
  std::string live = pager_->root_dir() + "/live";
  pager_->Kill(SIGKILL);
  ASSERT_TRUE(pager_->WaitForExit(std::chrono::seconds(10)));
  pager_.reset();
  for (const auto& [name, text] : std::vector<std::pair<std::string, std::string>>{
           {"x.1.json", "{not json"},
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
}  // namespace uffdpager::testing
