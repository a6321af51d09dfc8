// PagerGraduation against real pagers of two versions sharing a data dir:
// outdated versions' sessions graduate first, at most as many per pass as
// asked, never before the soak age; a graduated VM reads every byte right
// without its pager; a completion that fails leaves the VM served by its
// pager and is not retried before the backoff.
#include "uffdpager/pager_graduation.h"

#include <unistd.h>

#include "support/pager_fixture.h"
#include "support/run_tool.h"

namespace uffdpager::testing::graduation_test {
namespace {

constexpr uint64_t kMiB = 1ULL << 20;
const std::vector<uint64_t> kRegions = {8 * kMiB, 4 * kMiB};
constexpr uint64_t kBytes = 12 * kMiB;

class PagerGraduationTest : public PagerFixture {
 protected:
  void SetUp() override {
    PagerFixture::SetUp();
    if (IsSkipped()) return;
    StartPager();  // version "test": the current one
    PagerProcessOptions old_options;
    old_options.version_key = "old";
    auto old = TestPager::Start(dir_.path(), old_options);
    ASSERT_TRUE(old.ok()) << old.status().ToString();
    old_ = std::move(*old);
    snap_ = MakeSnapshot("mem", kBytes, 71);
  }

  // A VM restored through `pager` as session `id`, a few pages touched.
  std::unique_ptr<VmmStandIn> Serve(const TestPager& pager, const std::string& id, const std::string& backing) {
    CreateSessionRequest req = SessionRequest(id);
    req.backing_memory_path = backing;
    auto created = pager.client().CreateSession(req);
    EXPECT_TRUE(created.ok()) << created.status().ToString();
    if (!created.ok()) return nullptr;
    auto vm = VmmStandIn::Restore(created->uffd_socket_path, kRegions);
    EXPECT_TRUE(vm.ok()) << vm.status().ToString();
    if (!vm.ok()) return nullptr;
    for (uint64_t off = 0; off < kMiB; off += 4096) {
      (void)*reinterpret_cast<volatile const uint8_t*>((*vm)->memory.AtFileOffset(off));
    }
    EXPECT_TRUE(WaitFor([&] { return SessionState(pager, id) == "serving"; }));
    return std::move(*vm);
  }

  GraduationOptions Options() const {
    GraduationOptions options;
    options.data_dir = dir_.path();
    options.version_key = "test";
    options.soak_age = std::chrono::seconds(0);
    options.max_concurrent = 1;
    return options;
  }

  std::unique_ptr<TestPager> old_;
  std::string snap_;
};

TEST_F(PagerGraduationTest, OutdatedVersionsGoFirstAndGraduatedVmsReadEveryByteWithoutAPager) {
  auto new_a = Serve(*pager_, "new-a", snap_);
  auto old_a = Serve(*old_, "old-a", snap_);
  auto new_b = Serve(*pager_, "new-b", snap_);
  auto old_b = Serve(*old_, "old-b", snap_);
  ASSERT_TRUE(new_a && old_a && new_b && old_b);

  GraduationOptions options = Options();
  options.max_per_pass = 2;
  auto graduation = PagerGraduation::Create(options);
  ASSERT_TRUE(graduation.ok()) << graduation.status().ToString();
  auto first = graduation->RunPass();
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->graduated, (std::vector<std::string>{"old/old-a", "old/old-b"}))
      << "the outdated version's sessions first, the oldest first";
  EXPECT_TRUE(first->failed.empty()) << ::testing::PrintToString(first->failed);
  EXPECT_EQ(first->deferred, 2u);
  EXPECT_EQ(first->still_served, (std::map<std::string, size_t>{{"test", 2}}));
  EXPECT_EQ(SessionState(*old_, "old-a"), "completed");
  EXPECT_EQ(SessionState(*pager_, "new-a"), "serving");

  // The old pager may go now: its VMs hold all their memory.
  for (const char* id : {"old-a", "old-b"}) EXPECT_TRUE(old_->client().CloseSession(id).ok());
  old_.reset();
  EXPECT_TRUE(MatchesSnapshotFile(old_a->memory, snap_));
  EXPECT_TRUE(MatchesSnapshotFile(old_b->memory, snap_));

  auto second = graduation->RunPass();
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(second->graduated, (std::vector<std::string>{"test/new-a", "test/new-b"}));
  EXPECT_TRUE(second->still_served.empty());
  EXPECT_TRUE(MatchesSnapshotFile(new_a->memory, snap_));
  EXPECT_EQ(Session("new-b")["present_pages"], kBytes / 4096);
}

TEST_F(PagerGraduationTest, SessionsYoungerThanTheSoakAgeStay) {
  auto vm = Serve(*old_, "young", snap_);
  ASSERT_TRUE(vm);
  GraduationOptions options = Options();
  options.soak_age = std::chrono::hours(1);
  auto graduation = PagerGraduation::Create(options);
  ASSERT_TRUE(graduation.ok());
  auto report = graduation->RunPass();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->graduated.empty());
  EXPECT_EQ(report->soaking, 1u);
  EXPECT_EQ(report->still_served, (std::map<std::string, size_t>{{"old", 1}}));
  EXPECT_EQ(SessionState(*old_, "young"), "serving");
}

TEST_F(PagerGraduationTest, AFailedGraduationLeavesTheVmOnItsPagerUntilTheBackoffPassed) {
  // The second half of its memory file is cut away after the restore: a
  // completion cannot read it.
  const std::string cut = MakeSnapshot("cut", kBytes, 72);
  const std::vector<uint8_t> bytes = ReadFileBytes(cut);
  auto vm = Serve(*pager_, "cut", cut);
  ASSERT_TRUE(vm);
  ASSERT_EQ(::truncate(cut.c_str(), kBytes / 2), 0);

  GraduationOptions options = Options();
  options.retry_backoff = std::chrono::hours(1);
  auto graduation = PagerGraduation::Create(options);
  ASSERT_TRUE(graduation.ok());
  auto first = graduation->RunPass();
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_TRUE(first->graduated.empty());
  ASSERT_EQ(first->failed.size(), 1u);
  EXPECT_EQ(first->failed[0].rfind("test/cut: ", 0), 0u) << first->failed[0];
  EXPECT_EQ(SessionState("cut"), "serving") << "the VM stays on its pager";
  // Its pager still serves it: pages of the first half, never touched.
  for (uint64_t off = 2 * kMiB; off < 3 * kMiB; off += 4096) {
    ASSERT_EQ(0, std::memcmp(vm->memory.AtFileOffset(off), &bytes[off], 4096)) << "page at " << off;
  }

  auto second = graduation->RunPass();
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(second->failed.empty()) << "retried within the backoff";
  EXPECT_EQ(second->backing_off, 1u);
  EXPECT_EQ(second->still_served, (std::map<std::string, size_t>{{"test", 1}}));
}

TEST_F(PagerGraduationTest, PagerctlGraduateReportsWhatItDidAndWhatStaysOnAPager) {
  auto old_vm = Serve(*old_, "old-a", snap_);
  auto young_vm = Serve(*pager_, "young", snap_);
  ASSERT_TRUE(old_vm && young_vm);
  // Only the outdated version's session: --max-per-pass 1, in JSON.
  ToolRun run = RunTool({PAGERCTL_BIN, "--data-dir", dir_.path(), "--version-key", "test", "--json", "graduate",
                         "--soak-seconds", "0", "--max-per-pass", "1"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  nlohmann::json report = nlohmann::json::parse(run.out, nullptr, false);
  ASSERT_FALSE(report.is_discarded()) << run.out;
  EXPECT_EQ(report["graduated"], nlohmann::json({"old/old-a"}));
  EXPECT_EQ(report["still_served"], nlohmann::json({{"test", 1}}));
  EXPECT_TRUE(MatchesSnapshotFile(old_vm->memory, snap_));
  // The human line names what is still on a pager.
  run = RunTool({PAGERCTL_BIN, "--data-dir", dir_.path(), "--version-key", "test", "graduate"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("graduated 0 session(s); 1 soaking"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("still on a pager: 1 on test"), std::string::npos) << run.out;
}

TEST_F(PagerGraduationTest, BadOptionsAreRefused) {
  GraduationOptions options = Options();
  options.max_concurrent = 0;
  EXPECT_EQ(PagerGraduation::Create(options).status().code(), ErrorCode::kInvalidArgument);
  options = Options();
  options.version_key = "../x";
  EXPECT_EQ(PagerGraduation::Create(options).status().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace uffdpager::testing::graduation_test
