// FdStoreSupervisor against a real service: fd_store_probe, which speaks
// sd_notify and reads LISTEN_FDS through libsystemd itself.
#include "support/fd_store_supervisor.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/wait_for.h"
#include "support/temp_dir.h"

#ifndef FD_STORE_PROBE_BIN
#error "FD_STORE_PROBE_BIN must name the fd_store_probe binary"
#endif

namespace uffdpager::testing {
namespace {

using namespace std::chrono_literals;
using Names = std::vector<std::string>;

constexpr std::chrono::milliseconds kWait = 10s;

// One start of the probe, as it reported it.
struct PassedFd {
  int fd = -1;
  std::string name;
  int cloexec = -1;
  std::string line;
};
struct ProbeStart {
  pid_t pid = 0;
  int listen_fds = -1;
  std::vector<PassedFd> fds;
  std::vector<int> open_fds;
  bool complete = false;
};

// "key=value" from a space-separated line; the value of the last key runs
// to the end of the line (it may hold spaces).
std::string Field(const std::string& line, const std::string& key, bool to_end = false) {
  size_t at = line.find(key + "=");
  if (at == std::string::npos) return "";
  at += key.size() + 1;
  if (to_end) return line.substr(at);
  return line.substr(at, line.find(' ', at) - at);
}

std::vector<ProbeStart> ReadReport(const std::string& path) {
  std::vector<ProbeStart> starts;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("start ", 0) == 0) {
      ProbeStart s;
      s.pid = std::stoi(Field(line, "pid"));
      s.listen_fds = std::stoi(Field(line, "listen_fds"));
      starts.push_back(s);
    } else if (starts.empty()) {
      continue;
    } else if (line.rfind("fd=", 0) == 0) {
      PassedFd f;
      f.fd = std::stoi(Field(line, "fd"));
      f.name = Field(line, "name");
      f.cloexec = std::stoi(Field(line, "cloexec"));
      f.line = Field(line, "line", /*to_end=*/true);
      starts.back().fds.push_back(f);
    } else if (line.rfind("open=", 0) == 0) {
      std::stringstream ss(line.substr(5));
      std::string fd;
      while (std::getline(ss, fd, ',')) starts.back().open_fds.push_back(std::stoi(fd));
    } else if (line == "end") {
      starts.back().complete = true;
    }
  }
  return starts;
}

Names Sorted(Names names) {
  std::sort(names.begin(), names.end());
  return names;
}

class FdStoreSupervisorTest : public ::testing::Test {
 protected:
  std::unique_ptr<FdStoreSupervisor> StartProbe(const std::vector<std::string>& actions,
                                                FdStoreSupervisorOptions options = {}) {
    options.argv = {FD_STORE_PROBE_BIN, report_path()};
    options.argv.insert(options.argv.end(), actions.begin(), actions.end());
    options.log_path = dir_ / "probe.log";
    options.socket_dir = dir_.path();
    auto started = FdStoreSupervisor::Start(options);
    EXPECT_TRUE(started.ok()) << started.status().ToString();
    if (!started.ok()) return nullptr;
    return std::move(started).value();
  }

  std::string report_path() const { return dir_ / "report"; }
  std::vector<ProbeStart> Starts() const { return ReadReport(report_path()); }

  // For failure messages.
  static std::string Describe(const FdStoreSupervisor& s) {
    std::string out = "probe log:\n" + s.Log() + "supervisor errors:\n";
    for (const auto& e : s.Errors()) out += "  " + e + "\n";
    return out;
  }

  TempDir dir_;
};

TEST_F(FdStoreSupervisorTest, FirstStartHasNotifySocketAndNoListenFds) {
  auto sup = StartProbe({"status=starting", "ready"});
  ASSERT_NE(sup, nullptr);
  ASSERT_TRUE(sup->WaitReady(kWait)) << Describe(*sup);
  EXPECT_EQ(sup->LastStatus(), "starting");
  auto starts = Starts();
  ASSERT_EQ(starts.size(), 1u);
  EXPECT_EQ(starts[0].pid, sup->pid());
  EXPECT_EQ(starts[0].listen_fds, 0);
  EXPECT_EQ(starts[0].open_fds, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(sup->rejected_messages(), 0u);
}

TEST_F(FdStoreSupervisorTest, StoredFdsSurviveKill9AndComeBackNamedAtFd3) {
  auto sup = StartProbe({"fresh:store-memfd=mem:hello-memfd", "fresh:store-pipe-nopoll=pipe:hello-pipe", "ready"});
  ASSERT_NE(sup, nullptr);
  ASSERT_TRUE(sup->WaitReady(kWait)) << Describe(*sup);
  // Newest first, as systemd hands them back.
  ASSERT_EQ(sup->StoredNames(), (Names{"pipe", "mem"}));
  // Change the parked memfd from here: the restarted service must read this,
  // which only the same open file can show.
  {
    auto mem = sup->DupStored("mem");
    ASSERT_EQ(mem.size(), 1u);
    const char text[] = "rewritten-by-test\n";
    ASSERT_EQ(::pwrite(mem[0].get(), text, sizeof(text) - 1, 0), static_cast<ssize_t>(sizeof(text) - 1));
  }
  const pid_t first = sup->pid();
  // Bait: a test fd without O_CLOEXEC must not reach the restarted service.
  int bait[2];
  ASSERT_EQ(::pipe(bait), 0);

  ASSERT_TRUE(sup->KillAndRestart(SIGKILL).ok());
  ASSERT_TRUE(sup->WaitReady(kWait)) << Describe(*sup);
  ::close(bait[0]);
  ::close(bait[1]);

  auto starts = Starts();
  ASSERT_EQ(starts.size(), 2u) << Describe(*sup);
  const ProbeStart& second = starts[1];
  EXPECT_TRUE(second.complete);
  EXPECT_EQ(second.pid, sup->pid());
  EXPECT_NE(second.pid, first);
  // libsystemd accepted LISTEN_PID and LISTEN_FDNAMES, or it would report 0.
  ASSERT_EQ(second.listen_fds, 2) << Describe(*sup);
  ASSERT_EQ(second.fds.size(), 2u);
  EXPECT_EQ(second.fds[0].fd, 3);
  EXPECT_EQ(second.fds[0].name, "pipe");
  EXPECT_EQ(second.fds[0].line, "hello-pipe");  // still in the pipe the dead child filled
  EXPECT_EQ(second.fds[0].cloexec, 0);
  EXPECT_EQ(second.fds[1].fd, 4);
  EXPECT_EQ(second.fds[1].name, "mem");
  EXPECT_EQ(second.fds[1].line, "rewritten-by-test");
  EXPECT_EQ(second.fds[1].cloexec, 0);
  EXPECT_EQ(second.open_fds, (std::vector<int>{0, 1, 2, 3, 4}));
  // The store keeps its copies after handing them over.
  EXPECT_EQ(sup->StoredNames(), (Names{"pipe", "mem"}));

  // Again: the same memfd comes back a second time.
  ASSERT_TRUE(sup->KillAndRestart(SIGKILL).ok());
  ASSERT_TRUE(sup->WaitReady(kWait)) << Describe(*sup);
  starts = Starts();
  ASSERT_EQ(starts.size(), 3u);
  ASSERT_EQ(starts[2].fds.size(), 2u);
  EXPECT_EQ(starts[2].fds[1].name, "mem");
  EXPECT_EQ(starts[2].fds[1].line, "rewritten-by-test");
  EXPECT_EQ(sup->State().starts, 3);
  EXPECT_EQ(sup->rejected_messages(), 0u) << Describe(*sup);
}

TEST_F(FdStoreSupervisorTest, ReadyIsPerChild) {
  // Only the first child says READY=1; the restarted one (it gets the memfd
  // back, so it is not "fresh") stays silent.
  auto sup = StartProbe({"fresh:store-memfd=m:x", "fresh:ready"});
  ASSERT_NE(sup, nullptr);
  ASSERT_TRUE(sup->WaitReady(kWait)) << Describe(*sup);
  ASSERT_TRUE(sup->KillAndRestart(SIGKILL).ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        auto starts = Starts();
        return starts.size() == 2 && starts[1].complete;
      },
      kWait))
      << Describe(*sup);
  EXPECT_FALSE(sup->WaitReady(200ms));
  EXPECT_FALSE(sup->ready());
}

TEST_F(FdStoreSupervisorTest, FdStoreRemoveDropsEveryFdOfThatName) {
  auto sup = StartProbe(
      {"fresh:store-memfd=a:one", "fresh:store-memfd=a:two", "fresh:store-memfd=b:three", "fresh:remove=a", "ready"});
  ASSERT_NE(sup, nullptr);
  ASSERT_TRUE(sup->WaitReady(kWait)) << Describe(*sup);
  EXPECT_EQ(sup->StoredNames(), (Names{"b"}));

  ASSERT_TRUE(sup->KillAndRestart().ok());
  ASSERT_TRUE(sup->WaitReady(kWait)) << Describe(*sup);
  auto starts = Starts();
  ASSERT_EQ(starts.size(), 2u);
  ASSERT_EQ(starts[1].fds.size(), 1u);
  EXPECT_EQ(starts[1].fds[0].name, "b");
  EXPECT_EQ(starts[1].fds[0].line, "three");
}

class FdStoreDuplicateTest : public FdStoreSupervisorTest, public ::testing::WithParamInterface<bool> {};

TEST_P(FdStoreDuplicateTest, SameOpenFileDescriptionIsStoredOnce) {
  FdStoreSupervisorOptions options;
  options.use_kcmp = GetParam();
  // store-dup sends {fd, dup(fd)}, then fd again: one description, three
  // times. store-reopen sends two open()s of one memfd: two descriptions.
  auto sup = StartProbe({"store-dup=d:x", "store-reopen=r:y", "store-memfd=m:z", "ready"}, options);
  ASSERT_NE(sup, nullptr);
  ASSERT_TRUE(sup->WaitReady(kWait)) << Describe(*sup);
  EXPECT_EQ(sup->StoredCount("d"), 1u);
  EXPECT_EQ(sup->StoredCount("r"), 2u);
  EXPECT_EQ(sup->StoredCount("m"), 1u);
  EXPECT_EQ(sup->StoredCount(), 4u);
  EXPECT_TRUE(sup->Errors().empty()) << Describe(*sup);
}

INSTANTIATE_TEST_SUITE_P(KcmpAndFallback, FdStoreDuplicateTest, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "Kcmp" : "FdinfoFallback"; });

TEST_F(FdStoreSupervisorTest, HungUpFdIsDroppedUnlessFdPoll0) {
  auto sup = StartProbe({"store-socket=sock", "store-socket-nopoll=sock-kept", "store-pipe=pipe:data",
                         "store-pipe-nopoll=pipe-kept:data", "ready"});
  ASSERT_NE(sup, nullptr);
  ASSERT_TRUE(sup->WaitReady(kWait)) << Describe(*sup);
  // Peers still open: nothing hung up yet.
  EXPECT_EQ(Sorted(sup->StoredNames()), (Names{"pipe", "pipe-kept", "sock", "sock-kept"}));

  ASSERT_EQ(::kill(sup->pid(), SIGUSR1), 0);  // the probe closes every peer
  EXPECT_TRUE(sup->WaitUntil(
      [](const FdStoreState& s) {
        return Sorted(s.stored_names) == Names{"pipe-kept", "sock-kept"};
      },
      kWait))
      << Describe(*sup);
  EXPECT_EQ(Sorted(sup->StoredNames()), (Names{"pipe-kept", "sock-kept"}));
}

// Sends `text` with `fd` attached to the notify socket from this process.
void SendFromTest(const std::string& socket_path, const std::string& text, int fd) {
  int s = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(s, 0);
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_path.c_str(), sizeof(addr.sun_path) - 1);
  struct iovec iov {
    const_cast<char*>(text.data()), text.size()
  };
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  struct msghdr msg {};
  msg.msg_name = &addr;
  msg.msg_namelen = sizeof(addr);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  EXPECT_EQ(::sendmsg(s, &msg, 0), static_cast<ssize_t>(text.size())) << std::strerror(errno);
  ::close(s);
}

TEST_F(FdStoreSupervisorTest, MessageFromAnotherPidIsRejectedAndItsFdsClosed) {
  auto sup = StartProbe({"status=up"});
  ASSERT_NE(sup, nullptr);
  ASSERT_TRUE(sup->WaitUntil([](const FdStoreState& s) { return s.status == "up"; }, kWait)) << Describe(*sup);

  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  SendFromTest(sup->notify_socket_path(), "READY=1\nSTATUS=intruder\nFDSTORE=1\nFDNAME=intruder", sv[0]);
  ::close(sv[0]);
  ASSERT_TRUE(sup->WaitUntil([](const FdStoreState& s) { return s.rejected_messages == 1; }, kWait));
  EXPECT_EQ(sup->StoredCount(), 0u);
  EXPECT_FALSE(sup->ready());
  EXPECT_EQ(sup->LastStatus(), "up");
  // The supervisor closed the copy it received: our end hangs up.
  struct pollfd p {
    sv[1], 0, 0
  };
  EXPECT_EQ(::poll(&p, 1, 5000), 1);
  EXPECT_TRUE(p.revents & POLLHUP);
  ::close(sv[1]);
}

TEST_F(FdStoreSupervisorTest, TooManyFdsInOneMessageDropsIt) {
  FdStoreSupervisorOptions options;
  options.max_fds_per_message = 2;
  auto sup = StartProbe({"store-many=many:4", "store-memfd=ok:x", "ready"}, options);
  ASSERT_NE(sup, nullptr);
  ASSERT_TRUE(sup->WaitReady(kWait)) << Describe(*sup);
  EXPECT_EQ(sup->StoredNames(), (Names{"ok"}));
  auto errors = sup->Errors();
  ASSERT_EQ(errors.size(), 1u) << Describe(*sup);
  EXPECT_NE(errors[0].find("truncated control data"), std::string::npos) << errors[0];
}

TEST_F(FdStoreSupervisorTest, StatusWatchdogStoppingAndDefaultName) {
  auto sup = StartProbe({"store-memfd-noname=x", "status=hello", "watchdog", "watchdog", "stopping", "ready"});
  ASSERT_NE(sup, nullptr);
  ASSERT_TRUE(sup->WaitReady(kWait)) << Describe(*sup);
  FdStoreState state = sup->State();
  EXPECT_EQ(state.stored_names, (Names{"stored"}));
  EXPECT_EQ(state.status, "hello");
  EXPECT_EQ(state.watchdog_pings, 2u);
  EXPECT_TRUE(state.stopping);
  EXPECT_EQ(state.accepted_messages, 6u);
  EXPECT_TRUE(state.errors.empty()) << Describe(*sup);
}

TEST_F(FdStoreSupervisorTest, RestartAfterTheServiceExitedOnItsOwn) {
  auto sup = StartProbe({"fresh:store-memfd=m:data", "ready", "fresh:exit=3"});
  ASSERT_NE(sup, nullptr);
  int status = 0;
  ASSERT_TRUE(sup->WaitForExit(kWait, &status)) << Describe(*sup);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 3);
  EXPECT_FALSE(sup->running());
  // Its messages, sent just before it exited, were all honoured.
  EXPECT_EQ(sup->StoredNames(), (Names{"m"}));

  ASSERT_TRUE(sup->Restart().ok());
  ASSERT_TRUE(sup->WaitReady(kWait)) << Describe(*sup);
  auto starts = Starts();
  ASSERT_EQ(starts.size(), 2u);
  ASSERT_EQ(starts[1].fds.size(), 1u);
  EXPECT_EQ(starts[1].fds[0].name, "m");
  EXPECT_EQ(starts[1].fds[0].line, "data");

  // Restart() is not a kill: refused while the service runs.
  Status refused = sup->Restart(100ms);
  EXPECT_EQ(refused.code(), ErrorCode::kConflict);
}

TEST_F(FdStoreSupervisorTest, StopEscalatesToSigkillAndReleasesTheStore) {
  auto sup = StartProbe({"ignore-term", "store-memfd=m:x", "ready"});
  ASSERT_NE(sup, nullptr);
  ASSERT_TRUE(sup->WaitReady(kWait)) << Describe(*sup);
  ASSERT_EQ(sup->StoredCount(), 1u);
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(sup->Stop(300ms).ok());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  int status = 0;
  ASSERT_TRUE(sup->WaitForExit(0ms, &status));
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  EXPECT_EQ(sup->StoredCount(), 0u);
}

TEST_F(FdStoreSupervisorTest, StopSendsSigtermFirst) {
  auto sup = StartProbe({"ready"});
  ASSERT_NE(sup, nullptr);
  ASSERT_TRUE(sup->WaitReady(kWait)) << Describe(*sup);
  ASSERT_TRUE(sup->Stop().ok());
  int status = 0;
  ASSERT_TRUE(sup->WaitForExit(0ms, &status));
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
}

TEST_F(FdStoreSupervisorTest, DestructionStopsAndReapsTheService) {
  pid_t pid = -1;
  {
    auto sup = StartProbe({"ignore-term", "store-pipe=p:x", "ready"});
    ASSERT_NE(sup, nullptr);
    ASSERT_TRUE(sup->WaitReady(kWait)) << Describe(*sup);
    pid = sup->pid();
  }
  // Reaped, not a zombie: the pid is gone.
  EXPECT_EQ(::kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
}

}  // namespace
}  // namespace uffdpager::testing
