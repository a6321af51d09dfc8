// The page server dies during a Uffd restore: the guest's next first touch
// of a page blocks in the kernel forever. tinyvmm must notice and say so
// (GET / "stalled"), and with --exit-on-stall exit non-zero — within a bound,
// and without ever hanging the test.
#include <signal.h>
#include <sys/wait.h>

#include "tinyvmm_fixture.h"

namespace uffdpager::vmm::testing {
namespace {

class TinyVmmStallTest : public TinyVmmTest {
 protected:
  void SetUp() override {
    TinyVmmTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    VmmInstance& vm = StartVmm("source");
    Boot(vm, 2, 32, false);
    WaitForSteps(vm, 200);
    Pause(vm);
    Snapshot(vm, "s1.state", "s1.mem");
    StartPager();
  }

  // Loads s1 through the pager without resuming (the load itself is served:
  // the VMM's generation write faults one page in), kills the pager, then
  // resumes: the vCPUs fault on pages nobody will serve.
  VmmInstance& RestoreThenKillPager(const std::string& name, std::vector<std::string> extra) {
    std::string socket = PagerSession(name, "s1.mem");
    VmmInstance& vm = StartVmm(name, std::move(extra));
    LoadUffd(vm, "s1.state", socket, /*resume=*/false);
    pager_->Kill(SIGKILL);
    EXPECT_TRUE(pager_->WaitForExit(10s));
    Resume(vm);
    return vm;
  }
};

TEST_F(TinyVmmStallTest, StallIsReportedWhenThePagerDies) {
  VmmInstance& vm = RestoreThenKillPager("victim", {"--stall-timeout-ms", "1000", "--pause-timeout-ms", "1000"});
  auto started = std::chrono::steady_clock::now();
  bool stalled = WaitFor([&] { return Call(vm, "GET", "/", nullptr, 2s).body.value("stalled", false); }, 15s);
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
  ASSERT_TRUE(stalled) << "no stall reported: " << Call(vm, "GET", "/").body.dump();
  EXPECT_LT(took.count(), 10000);
  Answer info = Call(vm, "GET", "/", nullptr, 2s);
  EXPECT_EQ(info.status, 200);
  EXPECT_EQ(info.body["state"], "Running");
  EXPECT_NE(info.body.value("stall_reason", "").find("made no progress"), std::string::npos) << info.body.dump();
  EXPECT_NE(vm.process.Log().find("stalled"), std::string::npos);
  // Pausing a VM whose vCPUs are stuck fails within the pause timeout
  // rather than hanging.
  Answer pause = Call(vm, "PATCH", "/vm", {{"state", "Paused"}}, 20s);
  EXPECT_EQ(pause.status, 400);
  EXPECT_NE(pause.fault().find("did not stop"), std::string::npos) << pause.body.dump();
  // And the process can still be stopped.
  vm.process.Kill(SIGKILL);
  EXPECT_TRUE(vm.process.WaitForExit(10s));
}

TEST_F(TinyVmmStallTest, ExitOnStallExitsNonZero) {
  VmmInstance& vm = RestoreThenKillPager("victim", {"--stall-timeout-ms", "1000", "--exit-on-stall"});
  int status = 0;
  ASSERT_TRUE(vm.process.WaitForExit(15s, &status)) << "tinyvmm did not exit on the stall:\n" << vm.process.Log();
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 4);
  EXPECT_NE(vm.process.Log().find("made no progress"), std::string::npos) << vm.process.Log();
}

}  // namespace
}  // namespace uffdpager::vmm::testing
