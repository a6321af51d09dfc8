// snapctl as a person meets it, with real tinyvmm guests and the real pager:
// a failed create or fork leaves nothing and the retry works; init changes
// only what it is given and keeps the pager while forks need it; pause and
// resume; one line of text or the JSON on success, the exit codes of the
// table; per-fork device overrides and a jailed VMM's uid reach the VMM and
// the pager; an auto-started pager is stopped once nothing uses it;
// progress on a terminal only.
#include <pty.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cli.h"
#include "lifecycle_fixture.h"
#include "support/run_tool.h"

#ifndef UFFD_PAGER_BIN
#error "UFFD_PAGER_BIN must name the uffd-pager binary"
#endif

namespace uffdpager::lifecycle::testing {
namespace {

using ::uffdpager::testing::RunTool;
using ::uffdpager::testing::ToolRun;

class LifecycleCliTest : public LifecycleTest {
 protected:
  ToolRun Snap(std::vector<std::string> args) {
    std::vector<std::string> argv = {SNAPCTL_BIN, "--data-dir", data_};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunTool(argv);
  }

  json LoadReport(const std::string& name) {
    auto r = HttpClient(ApiSocket(name)).Send("GET", "/tinyvmm/load", "", 5s);
    return r.ok() && r->status == 200 ? json::parse(r->body, nullptr, false) : json();
  }

  // The pager process this data directory's pid file names (pid 0 if none).
  ProcessIdentity PagerIdentity() {
    std::ifstream in(data_ + "/uffd/" + PagerKey() + "/pager.pid");
    pid_t pid = 0;
    if (!(in >> pid) || pid <= 0) return {};
    auto id = IdentifyProcess(pid);
    return id.ok() ? *id : ProcessIdentity{};
  }
};

TEST_F(LifecycleCliTest, FailedCreateOrForkLeavesNothingAndTheRetryWorks) {
  // A VMM that exits at start-up used to leave vm1 Created for good.
  ToolRun failed = Snap({"--vmm", "/bin/false", "create", "vm1", "--mem-mib", "32"});
  EXPECT_EQ(failed.exit_code, cli::kExitUnavailable) << failed.err;
  EXPECT_FALSE(HasInstance("vm1"));
  // Interrupted between the VMM's start and the commit: the next command
  // removes the instance and stops its VMM.
  ASSERT_EQ(Snapctl({"create", "vm1", "--mem-mib", "32"}, "create.after_launch"), kCrashExitCode);
  ASSERT_EQ(Snapctl({"recover"}), 0);
  EXPECT_FALSE(HasInstance("vm1"));
  ExpectConsistentDataDir();
  MakeStandbySource("src");

  // The pager cannot be started: the fork fails before anything is made.
  // (init changes only the pager binary: the VMM arguments stay.)
  const json config = json::parse(std::ifstream(data_ + "/config.json"), nullptr, false);
  Ok({"init", "--pager-binary", dir_ + "/no-such-pager"});
  json changed = json::parse(std::ifstream(data_ + "/config.json"), nullptr, false);
  EXPECT_EQ(changed["vmm_args"], config["vmm_args"]);
  EXPECT_EQ(changed["pager_cache_bytes"], config["pager_cache_bytes"]);
  const auto blobs = Blobs();
  ToolRun no_pager = Snap({"fork", "src", "f1"});
  EXPECT_EQ(no_pager.exit_code, cli::kExitUnavailable) << no_pager.err;
  EXPECT_NE(no_pager.err.find("no-such-pager"), std::string::npos) << no_pager.err;
  EXPECT_FALSE(HasInstance("f1"));
  Ok({"init", "--pager-binary", UFFD_PAGER_BIN});
  // The fork is made, then its VMM cannot start: the fork is removed again.
  ToolRun no_vmm = Snap({"--vmm", "/bin/false", "fork", "src", "f1"});
  EXPECT_EQ(no_vmm.exit_code, cli::kExitUnavailable) << no_vmm.err;
  EXPECT_NE(no_vmm.err.find("the fork was removed"), std::string::npos) << no_vmm.err;
  EXPECT_FALSE(HasInstance("f1"));
  EXPECT_EQ(Blobs(), blobs);
  ExpectConsistentDataDir();

  // Both retries succeed.
  Ok({"create", "vm1", "--mem-mib", "32"});
  Ok({"fork", "src", "f1"});
  EXPECT_EQ(Show("f1").state, InstanceState::kRunning);
  EXPECT_EQ(Show("vm1").state, InstanceState::kRunning);
}

TEST_F(LifecycleCliTest, TheBackendAndPagerStayWhileForksDependOnThePager) {
  MakeStandbySource("src");
  Ok({"fork", "src", "f1", "--state", "standby"});  // its first restore must go through the pager
  for (const auto& change :
       std::vector<std::vector<std::string>>{{"init", "--backend", "file"}, {"init", "--pager-version-key", "other"}}) {
    ToolRun refused = Snap(change);
    EXPECT_EQ(refused.exit_code, cli::kExitConflict) << refused.err;
    EXPECT_NE(refused.err.find("f1 depend(s) on the pager"), std::string::npos) << refused.err;
  }
  json config = json::parse(std::ifstream(data_ + "/config.json"), nullptr, false);
  EXPECT_EQ(config["backend"], "uffd");
  Ok({"restore", "f1"});
  EXPECT_EQ(Snap({"init", "--backend", "file"}).exit_code, cli::kExitConflict) << "f1's VM is the pager's";
  // Its standby is a layer over src's bytes: a chain only the pager restores.
  Ok({"standby", "f1"});
  ToolRun layered = Snap({"init", "--backend", "file"});
  EXPECT_EQ(layered.exit_code, cli::kExitConflict) << layered.err;
  EXPECT_NE(layered.err.find("f1 depend(s) on the pager"), std::string::npos) << layered.err;
  // Without layers the standby merges them into memory the fork owns: free
  // to switch.
  Ok({"init", "--max-layers", "1"});
  Ok({"restore", "f1"});
  Ok({"standby", "f1"});
  ToolRun switched = Snap({"init", "--backend", "file"});
  EXPECT_EQ(switched.exit_code, 0) << switched.err;
  EXPECT_EQ(switched.out, "reconfigured " + data_ + ": backend\n");
}

TEST_F(LifecycleCliTest, PauseResumeAndTheResultOfEachCommand) {
  ToolRun created = Snap({"create", "vm", "--mem-mib", "32", "--json"});  // --json after the command
  ASSERT_EQ(created.exit_code, 0) << created.err;
  json shown = json::parse(created.out, nullptr, false);
  EXPECT_EQ(shown["name"], "vm");
  EXPECT_EQ(shown["state"], "Running");
  EXPECT_EQ(Snap({"create", "vm", "--mem-mib", "32"}).exit_code, cli::kExitConflict) << "exists";
  WaitForSteps("vm", Steps(50));

  ToolRun paused = Snap({"pause", "vm"});
  EXPECT_EQ(paused.exit_code, 0) << paused.err;
  EXPECT_EQ(paused.out.rfind("paused vm: Paused, 1 vCPU, 32 MiB, VMM pid ", 0), 0u) << paused.out;
  EXPECT_EQ(Guest("vm")["state"], "Paused");
  EXPECT_EQ(Show("vm").state, InstanceState::kPaused);
  EXPECT_EQ(Snap({"pause", "vm"}).exit_code, 0) << "pausing a paused VM changes nothing";
  uint32_t step = Guest("vm")["vcpus"][0]["step"].get<uint32_t>();
  EXPECT_EQ(Snap({"restore", "vm"}).exit_code, cli::kExitConflict);
  Ok({"resume", "vm"});
  EXPECT_EQ(Show("vm").state, InstanceState::kRunning);
  WaitForSteps("vm", step + Steps(50));  // it runs again

  Ok({"standby", "vm"});
  EXPECT_EQ(Snap({"pause", "vm"}).exit_code, cli::kExitConflict) << "a Standby instance has no vCPUs to pause";
  ToolRun restored = Snap({"restore", "vm", "--paused"});
  EXPECT_EQ(restored.exit_code, 0) << restored.err;
  EXPECT_EQ(restored.out.rfind("restored vm: Paused", 0), 0u) << restored.out;
  ToolRun resumed = Snap({"resume", "vm"});
  EXPECT_EQ(resumed.out.rfind("resumed vm: Running", 0), 0u) << resumed.out;
  EXPECT_EQ(Snap({"stop", "vm"}).out, "stopped vm: Stopped, 1 vCPU, 32 MiB\n");
  EXPECT_EQ(Snap({"delete", "vm"}).out, "deleted vm\n");
  EXPECT_EQ(Snap({"show", "vm"}).exit_code, cli::kExitNotFound);
}

// Firecracker users' expectations: each fork restores on its own TAP device
// and vsock socket, and a jailed VMM's uid is the only peer its pager
// session accepts.
TEST_F(LifecycleCliTest, ForkRestoresCarryDeviceOverridesAndTheVmmUid) {
  Ok({"init", "--vmm-uid", std::to_string(::getuid()), "--vmm-gid", std::to_string(::getgid())});
  MakeStandbySource("src");
  Ok({"fork", "src", "f1", "--network-override", "eth0=tap-f1", "--network-override", "eth1=tap-f1b",
      "--vsock-override", dir_ + "/f1.vsock"});
  json load = LoadReport("f1");
  EXPECT_EQ(load["backend_type"], "Uffd");
  EXPECT_EQ(load["network_overrides"], json::array({json{{"iface_id", "eth0"}, {"host_dev_name", "tap-f1"}},
                                                    json{{"iface_id", "eth1"}, {"host_dev_name", "tap-f1b"}}}))
      << load.dump();
  EXPECT_EQ(load["vsock_override"], json({{"uds_path", dir_ + "/f1.vsock"}})) << load.dump();
  auto session = Pager().GetSession("f1");
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  EXPECT_EQ((*session)["expected_uid"], ::getuid()) << session->dump();
  EXPECT_EQ((*session)["socket_uid"], ::getuid()) << session->dump();
  EXPECT_EQ((*session)["socket_gid"], ::getgid()) << session->dump();
  EXPECT_EQ((*session)["state"], "serving") << session->dump();

  // restore takes them too; without them the load carries none.
  Ok({"fork", "src", "f2", "--state", "standby"});
  EXPECT_EQ(Snap({"fork", "src", "f3", "--state", "standby", "--vsock-override", "/x"}).exit_code, cli::kExitUsage);
  Ok({"restore", "f2", "--vsock-override", dir_ + "/f2.vsock"});
  load = LoadReport("f2");
  EXPECT_EQ(load["vsock_override"]["uds_path"], dir_ + "/f2.vsock");
  EXPECT_EQ(load["network_overrides"], json::array());
  Ok({"standby", "f2"});
  Ok({"restore", "f2"});
  EXPECT_FALSE(LoadReport("f2").contains("vsock_override"));
}

TEST_F(LifecycleCliTest, AnAutoStartedPagerStopsOnceNothingUsesIt) {
  MakeStandbySource("src");
  Ok({"fork", "src", "f1"});
  ProcessIdentity pager = PagerIdentity();
  ASSERT_NE(pager.pid, 0);
  EXPECT_TRUE(pager.IsAlive());
  Ok({"fork", "src", "f2", "--state", "standby"});
  EXPECT_TRUE(pager.IsAlive()) << "f1's VM still needs it";
  Ok({"standby", "f1"});
  EXPECT_FALSE(pager.IsAlive()) << "snapctl started it and no VM needs it any more";
  EXPECT_FALSE(Pager().Health(1s).ok());

  // A pager someone else started is never stopped.
  auto own =
      ChildProcess::Spawn({UFFD_PAGER_BIN, "--data-dir", data_, "--version-key", PagerKey()}, dir_ + "/own-pager.log");
  ASSERT_TRUE(own.ok()) << own.status().ToString();
  ASSERT_TRUE(WaitFor([&] { return Pager().Health(1s).ok(); }, 20s)) << own->Log();
  Ok({"restore", "f2"});
  Ok({"standby", "f2"});
  EXPECT_TRUE(own->running() && Pager().Health().ok()) << "an operator's pager was stopped";
}

TEST_F(LifecycleCliTest, ProgressGoesToATerminalOnly) {
  Ok({"create", "src", "--mem-mib", "32"});
  WaitForSteps("src", Steps(50));
  // stderr on a terminal: the steps are shown, then erased.
  int master = -1;
  pid_t pid = ::forkpty(&master, nullptr, nullptr, nullptr);
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, STDOUT_FILENO);
    ::execl(SNAPCTL_BIN, SNAPCTL_BIN, "--data-dir", data_.c_str(), "standby", "src", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  std::string screen;
  char buf[4096];
  for (ssize_t n; (n = ::read(master, buf, sizeof(buf))) > 0;) screen.append(buf, n);  // EIO once it exits
  ::close(master);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << screen;
  EXPECT_NE(screen.find("snapctl: pausing src"), std::string::npos) << screen;
  EXPECT_NE(screen.find("snapctl: writing a Full snapshot of src (32 MiB)"), std::string::npos) << screen;
  EXPECT_EQ(screen.substr(screen.size() - 4), "\r\033[K") << "the progress line is erased at the end";

  // stderr to a file: none of it.
  Ok({"restore", "src"});
  ToolRun piped = Snap({"standby", "src"});
  EXPECT_EQ(piped.exit_code, 0);
  EXPECT_EQ(piped.err.find("writing a"), std::string::npos) << piped.err;
}

}  // namespace
}  // namespace uffdpager::lifecycle::testing
