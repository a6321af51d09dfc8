// PagerService: a client starts its version's pager and drains older
// versions. Everything runs the real uffd-pager. PID 1 here is not systemd,
// so the start command is a real command that does what `systemctl start`
// would: start the pager detached (its own session, outliving the command).
// The test is a child subreaper, so those pagers become its children when
// their shell exits; it kills and reaps each one it started.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/unix_socket.h"
#include "support/pager_fixture.h"
#include "uffdpager/pager_service.h"

namespace uffdpager::testing::service_test {
namespace {

using std::chrono::milliseconds;
constexpr uint64_t kMiB = 1ULL << 20;
const std::vector<uint64_t> kRegions = {4 * kMiB, 4 * kMiB};

// True once `pid` has exited: reaped here (it is our child or, through the
// subreaper, our orphaned grandchild), or gone or a zombie elsewhere.
bool Exited(pid_t pid) {
  int st = 0;
  pid_t r = ::waitpid(pid, &st, WNOHANG);
  if (r == pid) return true;
  if (r == 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), {});
  size_t close = text.rfind(')');
  return close == std::string::npos || close + 2 >= text.size() || text[close + 2] == 'Z';
}

size_t CountLines(const std::string& path) {
  std::ifstream in(path);
  size_t n = 0;
  for (std::string line; std::getline(in, line);) ++n;
  return n;
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class PagerServiceTest : public PagerFixture {
 protected:
  void SetUp() override {
    PagerFixture::SetUp();
    if (IsSkipped()) return;
    ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    snap_ = MakeSnapshot("mem", 8 * kMiB, 61);
  }

  void TearDown() override {
    for (pid_t pid : started_) {
      ::kill(pid, SIGTERM);
      if (!WaitFor([&] { return Exited(pid); }, std::chrono::seconds(5))) {
        ::kill(pid, SIGKILL);
        EXPECT_TRUE(WaitFor([&] { return Exited(pid); }, std::chrono::seconds(10))) << "pager " << pid << " lives on";
      }
    }
    ::prctl(PR_SET_CHILD_SUBREAPER, 0);
  }

  // A start command that starts the real pager detached, as systemd would,
  // after running `before` (shell).
  std::vector<std::string> StartCommand(const std::string& before = "") const {
    return {"/bin/sh", "-c",
            before + "setsid " UFFD_PAGER_BIN
                     " --data-dir '{data_dir}' --version-key '{version}' --cache-max-bytes 268435456"
                     " --log-level debug </dev/null >>'{data_dir}/pager-{version}.log' 2>&1 &"};
  }

  // A start command that starts the pager and counts its runs in `starts`.
  std::vector<std::string> CountingStartCommand() const { return StartCommand("echo run >> '{data_dir}/starts'; "); }

  PagerService Service(const std::string& version, std::vector<std::string> command,
                       milliseconds ready_timeout = std::chrono::seconds(10)) {
    auto service = PagerService::Create({.data_dir = dir_.path(),
                                         .version_key = version,
                                         .start_command = std::move(command),
                                         .ready_timeout = ready_timeout});
    EXPECT_TRUE(service.ok()) << service.status().ToString();
    return std::move(service).value();
  }

  // The pid of the pager serving `version` (from its pager.pid), to be killed
  // at the end of the test.
  pid_t RememberPager(const std::string& version) {
    std::ifstream in(dir_ / ("uffd/" + version + "/pager.pid"));
    pid_t pid = 0;
    in >> pid;
    EXPECT_GT(pid, 0) << "no pager.pid for " << version;
    if (pid > 0) started_.push_back(pid);
    return pid;
  }

  // A session on `client`, restored by a stand-in VMM, every page checked.
  void ExpectServed(const PagerClient& client, const std::string& id) {
    CreateSessionRequest req;
    req.session_id = id;
    req.instance_id = id;
    req.backing_memory_path = snap_;
    auto created = client.CreateSession(req);
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    auto vm = VmmStandIn::Restore(created->uffd_socket_path, kRegions);
    ASSERT_TRUE(vm.ok()) << vm.status().ToString();
    TouchAllPages((*vm)->memory, 2);
    EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap_));
  }

  std::string snap_;
  std::vector<pid_t> started_;
};

TEST_F(PagerServiceTest, OptionsAreCheckedAndTheUnitNameIsTheVersionKeyAsIs) {
  EXPECT_EQ(PagerService::Create({.version_key = "../x"}).status().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(PagerService::Create({.version_key = ".hidden"}).status().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(PagerService::Create({.version_key = "v1", .start_command = {}}).status().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(PagerService::Create({.version_key = "v1", .ready_timeout = milliseconds(0)}).status().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(PagerService::Create({.version_key = "v1", .ready_timeout = std::chrono::minutes(11)}).status().code(),
            ErrorCode::kInvalidArgument);
  // Version keys are valid unit instance names unescaped ("-" stays "-", so
  // the unit's %i, its --version-key, is the key itself).
  auto service = PagerService::Create({.version_key = "v1.2-rc_3"});
  ASSERT_TRUE(service.ok()) << service.status().ToString();
  EXPECT_EQ(service->ResolvedStartCommand(),
            (std::vector<std::string>{"systemctl", "start", "uffd-pager@v1.2-rc_3.service"}));
  EXPECT_EQ(service->control_socket_path(), "/var/lib/uffd-pager/uffd/v1.2-rc_3/control.sock");
}

TEST_F(PagerServiceTest, EnsureRunningStartsThePagerOnceAndTheClientWorks) {
  PagerService service = Service("v2", CountingStartCommand());
  auto pager = service.EnsureRunning();
  ASSERT_TRUE(pager.ok()) << pager.status().ToString() << "\n" << ReadText(dir_ / "pager-v2.log");
  RememberPager("v2");
  EXPECT_EQ(CountLines(dir_ / "starts"), 1u);
  EXPECT_EQ(pager->control_socket_path(), dir_ / "uffd/v2/control.sock");
  auto health = pager->Health();
  ASSERT_TRUE(health.ok()) << health.status().ToString();
  EXPECT_EQ(health->version, "v2");
  EXPECT_FALSE(health->draining);
  ExpectServed(*pager, "vm1");

  // Running already: the start command is not run again, not even one that
  // would fail.
  auto again = service.EnsureRunning();
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(CountLines(dir_ / "starts"), 1u);
  auto failing = Service("v2", {"/bin/sh", "-c", "echo run >> '{data_dir}/starts'; exit 1"});
  ASSERT_TRUE(failing.EnsureRunning().ok());
  EXPECT_EQ(CountLines(dir_ / "starts"), 1u);
  ExpectServed(*again, "vm2");
}

TEST_F(PagerServiceTest, AFailingStartCommandIsAClearError) {
  auto service = Service("v2", {"/bin/sh", "-c", "echo 'Unit uffd-pager@{version}.service not found.' >&2; exit 5"});
  auto pager = service.EnsureRunning();
  ASSERT_FALSE(pager.ok());
  const std::string message = pager.status().ToString();
  EXPECT_EQ(pager.status().code(), ErrorCode::kUnavailable) << message;
  EXPECT_NE(message.find("exited with status 5"), std::string::npos) << message;
  EXPECT_NE(message.find("Unit uffd-pager@v2.service not found."), std::string::npos) << message;
  EXPECT_NE(message.find("/bin/sh -c"), std::string::npos) << message;

  auto missing = Service("v2", {"/nonexistent/systemctl", "start", "uffd-pager@{version}.service"});
  auto result = missing.EnsureRunning();
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().ToString().find("/nonexistent/systemctl"), std::string::npos) << result.status().ToString();
  EXPECT_NE(result.status().ToString().find("No such file"), std::string::npos) << result.status().ToString();
}

TEST_F(PagerServiceTest, AStartThatStartsNothingTimesOutWithinTheReadyTimeout) {
  const milliseconds timeout(1500);
  auto nothing = Service("v2", {"/bin/true"}, timeout);
  auto began = std::chrono::steady_clock::now();
  auto pager = nothing.EnsureRunning();
  auto took = std::chrono::steady_clock::now() - began;
  ASSERT_FALSE(pager.ok());
  EXPECT_EQ(pager.status().code(), ErrorCode::kTimeout) << pager.status().ToString();
  EXPECT_NE(pager.status().ToString().find(dir_ / "uffd/v2/control.sock"), std::string::npos)
      << pager.status().ToString();
  EXPECT_GE(took, timeout);
  EXPECT_LT(took, timeout + std::chrono::seconds(2));

  // A start command that hangs is killed at the same deadline.
  auto hanging = Service("v2", {"/bin/sh", "-c", "echo starting; exec sleep 60"}, timeout);
  began = std::chrono::steady_clock::now();
  pager = hanging.EnsureRunning();
  took = std::chrono::steady_clock::now() - began;
  ASSERT_FALSE(pager.ok());
  EXPECT_EQ(pager.status().code(), ErrorCode::kTimeout) << pager.status().ToString();
  EXPECT_NE(pager.status().ToString().find("sleep 60"), std::string::npos) << pager.status().ToString();
  EXPECT_NE(pager.status().ToString().find("starting"), std::string::npos) << pager.status().ToString();
  EXPECT_LT(took, timeout + std::chrono::seconds(2));
}

TEST_F(PagerServiceTest, DrainOtherVersionsRetiresAnOlderPagerWithoutBreakingItsVm) {
  // v1, the old version, serves a live VM that has touched part of its memory.
  StartPager({.version_key = "v1"});
  auto vm = VmmStandIn::Restore(CreateSession("old-vm", snap_), kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  for (uint64_t off = 0; off < 8 * kMiB; off += 13 * 4096) {
    (void)*reinterpret_cast<volatile uint8_t*>((*vm)->memory.AtFileOffset(off));
  }
  // v0 died long ago (a stale socket nobody listens on); "empty" has none.
  std::filesystem::create_directories(dir_ / "uffd/v0");
  std::filesystem::create_directories(dir_ / "uffd/empty");
  ASSERT_TRUE(ListenUnixSocket(dir_ / "uffd/v0/control.sock", 0600).ok());
  ASSERT_TRUE(std::filesystem::is_socket(dir_ / "uffd/v0/control.sock"));

  // v2, the new version, starts and retires the others.
  PagerService service = Service("v2", StartCommand());
  auto pager = service.EnsureRunning();
  ASSERT_TRUE(pager.ok()) << pager.status().ToString() << "\n" << ReadText(dir_ / "pager-v2.log");
  RememberPager("v2");
  // Our own version under another name is still ours.
  std::filesystem::create_directory_symlink("v2", dir_ / "uffd/current");
  auto drained = service.DrainOtherVersions();
  ASSERT_TRUE(drained.ok()) << drained.status().ToString();
  EXPECT_EQ(*drained, std::vector<std::string>{"v1"});

  auto old_health = pager_->client().Health();
  ASSERT_TRUE(old_health.ok()) << old_health.status().ToString();
  EXPECT_TRUE(old_health->draining);
  auto new_health = pager->Health();
  ASSERT_TRUE(new_health.ok()) << new_health.status().ToString();
  EXPECT_FALSE(new_health->draining);

  // The old pager refuses new sessions (503), and so does EnsureRunning for
  // its version, without running any start command.
  CreateSessionRequest late;
  late.instance_id = "late";
  late.backing_memory_path = snap_;
  auto refused = pager_->client().CreateSession(late);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), ErrorCode::kUnavailable) << refused.status().ToString();
  EXPECT_NE(refused.status().ToString().find("HTTP 503"), std::string::npos) << refused.status().ToString();
  auto old_service = Service("v1", {"/bin/sh", "-c", "echo run >> '{data_dir}/starts'; exit 1"});
  auto old_ensure = old_service.EnsureRunning();
  ASSERT_FALSE(old_ensure.ok());
  EXPECT_EQ(old_ensure.status().code(), ErrorCode::kUnavailable) << old_ensure.status().ToString();
  EXPECT_NE(old_ensure.status().ToString().find("draining"), std::string::npos) << old_ensure.status().ToString();
  EXPECT_FALSE(std::filesystem::exists(dir_ / "starts"));

  // Its VM keeps being served, byte for byte, and the old pager stays up.
  TouchAllPages((*vm)->memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap_));
  EXPECT_FALSE(pager_->WaitForExit(milliseconds(300))) << "the draining pager exited under a live VM";

  // Once its last session closes, it exits.
  ASSERT_TRUE(pager_->client().CloseSession("old-vm").ok());
  int wait_status = 0;
  ASSERT_TRUE(pager_->WaitForExit(std::chrono::seconds(10), &wait_status)) << pager_->Log();
  EXPECT_TRUE(WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0) << wait_status;

  // Our own version was never touched; with v1 gone nothing is left to drain.
  new_health = pager->Health();
  ASSERT_TRUE(new_health.ok());
  EXPECT_FALSE(new_health->draining);
  ExpectServed(*pager, "new-vm");
  drained = service.DrainOtherVersions();
  ASSERT_TRUE(drained.ok()) << drained.status().ToString();
  EXPECT_TRUE(drained->empty());
}

}  // namespace
}  // namespace uffdpager::testing::service_test
