// Running under systemd: the sd_notify protocol as systemd's side sees it
// (READY only once the API answers, STATUS, watchdog pings, STOPPING),
// journald-style log lines, and the installed template unit.
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "support/pager_fixture.h"

namespace uffdpager::testing::systemd_test {
namespace {

// The systemd end of NOTIFY_SOCKET: a datagram socket collecting messages.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
    EXPECT_EQ(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << std::strerror(errno);
  }

  // Waits up to `timeout` for a message containing `what`; returns it ("" if none).
  std::string WaitFor(const std::string& what, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      for (size_t i = seen_; i < messages_.size(); ++i) {
        if (messages_[i].find(what) != std::string::npos) {
          seen_ = i + 1;
          return messages_[i];
        }
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return "";
      pollfd p{fd_.get(), POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) == 1) {
        char buf[4096];
        ssize_t n = ::recv(fd_.get(), buf, sizeof(buf), 0);
        if (n > 0) messages_.emplace_back(buf, static_cast<size_t>(n));
      }
    }
  }

 private:
  std::string path_;
  UniqueFd fd_;
  std::vector<std::string> messages_;
  size_t seen_ = 0;
};

class PagerSystemdTest : public PagerFixture {
 protected:
  void TearDown() override {
    ::unsetenv("NOTIFY_SOCKET");
    ::unsetenv("WATCHDOG_USEC");
    ::unsetenv("JOURNAL_STREAM");
  }
};

TEST_F(PagerSystemdTest, NotifiesReadyStatusWatchdogAndStopping) {
  NotifySocket systemd(dir_ / "notify.sock");
  ::setenv("NOTIFY_SOCKET", (dir_ / "notify.sock").c_str(), 1);
  ::setenv("WATCHDOG_USEC", "400000", 1);  // ping at least every 200 ms
  StartPager();
  ::unsetenv("NOTIFY_SOCKET");

  std::string ready = systemd.WaitFor("READY=1", std::chrono::seconds(5));
  ASSERT_FALSE(ready.empty()) << pager_->Log();
  EXPECT_NE(ready.find("STATUS=serving " + ControlSocket()), std::string::npos) << ready;
  EXPECT_FALSE(systemd.WaitFor("STATUS=0 sessions", std::chrono::seconds(2)).empty());

  // Watchdog pings keep coming while the pager is healthy.
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i) ASSERT_FALSE(systemd.WaitFor("WATCHDOG=1", std::chrono::seconds(2)).empty()) << i;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));

  std::string snap = MakeSnapshot("mem", 2 << 20, 71);
  CreateSession("s1", snap);
  EXPECT_FALSE(systemd.WaitFor("STATUS=1 sessions", std::chrono::seconds(2)).empty());

  pager_->Kill(SIGTERM);
  EXPECT_FALSE(systemd.WaitFor("STOPPING=1", std::chrono::seconds(5)).empty());
  EXPECT_TRUE(pager_->WaitForExit(std::chrono::seconds(10)));
}

TEST_F(PagerSystemdTest, LogsCarryJournalPrioritiesWhenStderrIsTheJournal) {
  // Make the pager believe its stderr (the log file) is journald's stream.
  std::string log = dir_ / "pager-test.log";
  std::ofstream(log).flush();
  struct stat st {};
  ASSERT_EQ(::stat(log.c_str(), &st), 0);
  ::setenv("JOURNAL_STREAM", (std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino)).c_str(), 1);
  StartPager();
  ::unsetenv("JOURNAL_STREAM");
  // A warning, from a session: its id is in the line.
  auto created = pager_->client().CreateSession(
      {.session_id = "journal", .instance_id = "i", .backing_memory_path = dir_ / "missing"});
  ASSERT_FALSE(created.ok());
  std::string text = pager_->Log();
  EXPECT_NE(text.find("<6>info uffd-pager"), std::string::npos) << text;
  EXPECT_NE(text.find("<4>warning create session journal refused"), std::string::npos) << text;
  EXPECT_EQ(text.find("T0"), std::string::npos) << "journald stamps time itself:\n" << text;
}

TEST(PagerSystemdUnitTest, TheTemplateUnitRunsThisPagerAsANotifyServicePerVersion) {
  std::ifstream in(UFFDPAGER_SYSTEMD_UNIT);
  ASSERT_TRUE(in) << UFFDPAGER_SYSTEMD_UNIT;
  std::stringstream ss;
  ss << in.rdbuf();
  std::string unit = ss.str();
  EXPECT_NE(unit.find("\nType=notify\n"), std::string::npos);
  EXPECT_NE(unit.find("\nWatchdogSec="), std::string::npos);
  // Crash recovery needs room for the sessions' fds, and a restart to use them.
  EXPECT_NE(unit.find("\nFileDescriptorStoreMax=65536\n"), std::string::npos);
  EXPECT_NE(unit.find("\nRestart=on-failure\n"), std::string::npos);
  // The tools' default data directory, which the unit's .env file may change.
  EXPECT_NE(unit.find("\nEnvironment=UFFDPAGER_DATA_DIR=/var/lib/uffd-pager\n"), std::string::npos) << unit;
  EXPECT_NE(unit.find("/bin/uffd-pager --data-dir ${UFFDPAGER_DATA_DIR} --version-key %i"), std::string::npos) << unit;
  EXPECT_EQ(unit.find("@CMAKE"), std::string::npos) << "unconfigured variable left in the unit";
  // Where systemd-analyze exists, the unit must pass its checks (ExecStart's
  // binary need not be installed for that: point it at the built one).
  if (std::system("command -v systemd-analyze >/dev/null 2>&1") != 0) GTEST_SKIP() << "no systemd-analyze";
  std::string copy = ::testing::TempDir() + "uffd-pager@v1.service";
  std::ofstream(copy) << unit.replace(unit.find("ExecStart=") + 10,
                                      unit.find(" --data-dir") - unit.find("ExecStart=") - 10, UFFD_PAGER_BIN);
  std::string cmd = "systemd-analyze verify --man=no " + copy + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string out;
  char buf[512];
  while (p && std::fgets(buf, sizeof(buf), p)) out += buf;
  int rc = p ? ::pclose(p) : -1;
  if (out.find("Failed to") != std::string::npos && out.find("bus") != std::string::npos) GTEST_SKIP() << out;
  EXPECT_EQ(rc, 0) << out;
  std::remove(copy.c_str());
}

}  // namespace
}  // namespace uffdpager::testing::systemd_test
