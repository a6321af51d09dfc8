// Security: who may connect to the pager's sockets, which peer a session
// accepts, and which backing files the pager may open. Every refusal is shown
// next to a good client that keeps being served byte-exact.
#include <grp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/http_client.h"
#include "common/unix_socket.h"
#include "support/pager_fixture.h"

namespace uffdpager::testing::security_test {
namespace {

constexpr uint64_t kMiB = 1ULL << 20;
const std::vector<uint64_t> kRegions = {4 * kMiB, 4 * kMiB};
constexpr uid_t kNobody = 65534;

struct FileMode {
  uid_t uid;
  gid_t gid;
  mode_t mode;
};

FileMode ModeOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path << ": " << std::strerror(errno);
  return {st.st_uid, st.st_gid, st.st_mode & 07777};
}

// Connects to `path` from a child process running as `uid`/`gid` and sends
// `payload`; returns the child's connect errno (0: connected and sent).
int ConnectAs(uid_t uid, gid_t gid, const std::string& path, const std::string& payload = "") {
  pid_t child = ::fork();
  if (child == 0) {
    // Only async-signal-safe calls from here on: the test is multi-threaded.
    if (::setgroups(0, nullptr) != 0 || ::setresgid(gid, gid, gid) != 0 || ::setresuid(uid, uid, uid) != 0) _exit(100);
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) _exit(errno);
    if (payload.empty()) _exit(0);
    if (::send(fd, payload.data(), payload.size(), MSG_NOSIGNAL) < 0) _exit(101);
    // Wait until the pager has looked at us and closed the connection.
    char c;
    while (::recv(fd, &c, 1, 0) > 0) {
    }
    _exit(0);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// True once the other end closed `fd` (an unread message makes that a reset).
::testing::AssertionResult ClosedByPeer(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 10000) != 1) return ::testing::AssertionFailure() << "still open after 10 s";
  char c;
  ssize_t n = ::recv(fd, &c, 1, MSG_DONTWAIT);
  if (n == 0 || (n < 0 && errno == ECONNRESET)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "recv: " << n << " " << std::strerror(errno) << " revents " << p.revents;
}

// Hands memory to `socket_path` as a VMM does; success if the pager turned
// us away unread (it may close before or after our send). Never touches the
// memory, which nobody would serve.
::testing::AssertionResult TurnedAway(const std::string& socket_path) {
  auto vm = VmmStandIn::Restore(socket_path, kRegions);
  if (!vm.ok()) {
    int e = vm.status().error_number();
    if (e == EPIPE || e == ECONNRESET) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << vm.status().ToString();
  }
  return ClosedByPeer((*vm)->handshake.connection.get());
}

class PagerSecurityTest : public PagerFixture {
 protected:
  void SetUp() override {
    PagerFixture::SetUp();
    if (IsSkipped()) return;
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as other users";
    // Other users must be able to walk to the sockets (the pager makes its
    // own directories searchable; the test's temp dir is ours to open).
    ASSERT_EQ(::chmod(dir_.path().c_str(), 0711), 0);
    std::filesystem::create_directories(dir_ / "snaps");
    std::filesystem::create_directories(dir_ / "other");
    snap_ = MakeSnapshot("snaps/mem", 8 * kMiB, 41);
    outside_ = MakeSnapshot("other/mem", 8 * kMiB, 42);
  }

  void StartWith(std::vector<std::string> args) {
    PagerProcessOptions options;
    options.handshake_timeout_ms = 500;
    options.extra_args = std::move(args);
    StartPager(options);
  }

  Result<CreatedSession> Create(CreateSessionRequest req) {
    if (req.instance_id.empty()) req.instance_id = "vm-" + req.session_id;
    if (req.backing_memory_path.empty()) req.backing_memory_path = snap_;
    return pager_->client().CreateSession(req);
  }

  // A session served to this process, checked byte for byte.
  void ExpectGoodClientServed(const std::string& id, CreateSessionRequest req = {}) {
    req.session_id = id;
    auto created = Create(req);
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    auto vm = VmmStandIn::Restore(created->uffd_socket_path, kRegions);
    ASSERT_TRUE(vm.ok()) << vm.status().ToString();
    TouchAllPages((*vm)->memory, 2);
    EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, req.backing_memory_path.empty() ? snap_ : req.backing_memory_path));
    EXPECT_EQ(SessionState(id), "serving");
  }

  std::string snap_;
  std::string outside_;
};

TEST_F(PagerSecurityTest, SocketsArePrivateToThePagerByDefault) {
  StartWith({});
  FileMode control = ModeOf(ControlSocket());
  EXPECT_EQ(control.mode, 0600u);
  EXPECT_EQ(control.uid, ::geteuid());
  auto created = Create({.session_id = "private"});
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  FileMode session = ModeOf(created->uffd_socket_path);
  EXPECT_EQ(session.mode, 0600u);
  EXPECT_EQ(session.uid, ::geteuid());
  // Another user can reach the directory but not connect.
  EXPECT_EQ(ConnectAs(kNobody, kNobody, created->uffd_socket_path), EACCES);
  EXPECT_EQ(ConnectAs(kNobody, kNobody, ControlSocket()), EACCES);
  // Directories are searchable, not listable.
  EXPECT_EQ(ModeOf(pager_->root_dir() + "/sessions").mode, 0711u);
  ExpectGoodClientServed("good");
}

TEST_F(PagerSecurityTest, ASessionSocketCanBeGivenToAJailedVmmsUser) {
  StartWith({});
  auto created = Create({.session_id = "jailed", .socket_uid = kNobody, .socket_gid = kNobody});
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  FileMode m = ModeOf(created->uffd_socket_path);
  EXPECT_EQ(m.uid, kNobody);
  EXPECT_EQ(m.gid, kNobody);
  EXPECT_EQ(m.mode, 0660u);
  // The jailed user gets in (its garbage handshake is read and refused: it
  // reached the session), a third user does not.
  EXPECT_EQ(ConnectAs(kNobody, kNobody, created->uffd_socket_path, "not a handshake"), 0);
  EXPECT_TRUE(WaitFor([&] { return Session("jailed").value("refused_handshakes", 0) == 1; }))
      << Session("jailed").dump();
  EXPECT_EQ(SessionState("jailed"), "waiting");
  auto other = Create({.session_id = "jailed2", .socket_uid = kNobody});
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(ModeOf(other->uffd_socket_path).mode, 0600u);
  EXPECT_EQ(ConnectAs(kNobody - 1, kNobody - 1, other->uffd_socket_path), EACCES);
  // The control socket stays the pager's own.
  EXPECT_EQ(ModeOf(ControlSocket()).uid, ::geteuid());
  ExpectGoodClientServed("good");
}

TEST_F(PagerSecurityTest, SocketGroupFlagOpensEverySocketToThatGroupOnly) {
  StartWith({"--socket-group", std::to_string(kNobody)});
  FileMode control = ModeOf(ControlSocket());
  EXPECT_EQ(control.gid, kNobody);
  EXPECT_EQ(control.mode, 0660u);
  auto created = Create({.session_id = "grouped"});
  ASSERT_TRUE(created.ok());
  FileMode session = ModeOf(created->uffd_socket_path);
  EXPECT_EQ(session.gid, kNobody);
  EXPECT_EQ(session.mode, 0660u);
  // A member of the group may use the control API; nobody else may.
  EXPECT_EQ(ConnectAs(1234, kNobody, ControlSocket()), 0);
  EXPECT_EQ(ConnectAs(1234, 1234, ControlSocket()), EACCES);
  ExpectGoodClientServed("good");
}

TEST_F(PagerSecurityTest, AnUnknownSocketOwnerStopsThePagerFromStarting) {
  PagerProcessOptions options;
  options.extra_args = {"--socket-owner", "no-such-user-uffdpager"};
  auto p = TestPager::Start(dir_.path(), options);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().ToString().find("exited at start-up"), std::string::npos) << p.status().ToString();
}

TEST_F(PagerSecurityTest, ASessionTurnsAwayAPeerWithTheWrongUidAndKeepsWaiting) {
  StartWith({});
  auto created = Create({.session_id = "for-nobody", .socket_uid = kNobody, .expected_uid = kNobody});
  ASSERT_TRUE(created.ok());
  // We (root) may connect to any socket, but are not the expected peer: our
  // real handshake is refused unread, and our uffd is not kept.
  EXPECT_TRUE(TurnedAway(created->uffd_socket_path));
  auto s = Session("for-nobody");
  EXPECT_EQ(s["state"], "waiting") << s.dump();
  EXPECT_EQ(s["refused_peers"], 1u);
  EXPECT_EQ(s["expected_uid"], kNobody);
  EXPECT_EQ(pager_->CountUserfaultfds(), 0u) << "the refused peer's uffd was kept";
  EXPECT_EQ(Stat("refused_peers"), 1u);
  EXPECT_NE(pager_->Log().find("not the expected uid 65534"), std::string::npos);
  // The expected user is let in: its (bad) handshake is read and judged.
  EXPECT_EQ(ConnectAs(kNobody, kNobody, created->uffd_socket_path, "[]"), 0);
  EXPECT_TRUE(WaitFor([&] { return Session("for-nobody").value("refused_handshakes", 0) == 1; }))
      << Session("for-nobody").dump();
  EXPECT_EQ(SessionState("for-nobody"), "waiting");
  EXPECT_EQ(Stat("refused_peers"), 1u);
  // A session expecting us (uid and pid) serves us.
  ExpectGoodClientServed("good", {.expected_uid = ::geteuid(), .expected_pid = ::getpid()});
}

TEST_F(PagerSecurityTest, ASessionTurnsAwayAPeerWithTheWrongPid) {
  StartWith({});
  auto created = Create({.session_id = "for-parent", .expected_pid = ::getppid()});
  ASSERT_TRUE(created.ok());
  EXPECT_TRUE(TurnedAway(created->uffd_socket_path));
  EXPECT_EQ(SessionState("for-parent"), "waiting");
  EXPECT_EQ(Session("for-parent")["refused_peers"], 1u);
  EXPECT_NE(pager_->Log().find("not the expected pid " + std::to_string(::getppid())), std::string::npos);
  ExpectGoodClientServed("good", {.expected_pid = ::getpid()});
}

TEST_F(PagerSecurityTest, BadPeerAndOwnerFieldsAreRefused) {
  StartWith({});
  HttpClient http(ControlSocket());
  for (std::string field : {"socket_uid", "socket_gid", "expected_uid", "expected_pid"}) {
    for (std::string value : {"-1", "\"0\"", "4294967295", "1.5"}) {
      auto r =
          http.Send("POST", "/sessions",
                    R"({"instance_id":"x","backing_memory_path":")" + snap_ + R"(",")" + field + "\":" + value + "}");
      ASSERT_TRUE(r.ok());
      EXPECT_EQ(r->status, 400) << field << "=" << value << ": " << r->body;
      EXPECT_NE(r->body.find(field), std::string::npos) << r->body;
    }
  }
  ExpectGoodClientServed("good");
}

TEST_F(PagerSecurityTest, BackingFilesOutsideTheAllowedRootsAreRefused) {
  std::filesystem::create_directories(dir_ / "more");
  StartWith({"--allowed-backing-root", dir_ / "snaps", "--allowed-backing-root", dir_ / "more/"});
  // A good client beneath a root is served while the others are refused.
  auto good = Create({.session_id = "good"});
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  auto vm = VmmStandIn::Restore(good->uffd_socket_path, kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();

  // A path outside the roots is a refusal for lack of permission (403); a
  // missing file beneath one is a bad request (400).
  auto refused = [&](const std::string& path, const std::string& words, ErrorCode code = ErrorCode::kPermissionDenied) {
    auto r = Create({.session_id = "bad", .backing_memory_path = path});
    ASSERT_FALSE(r.ok()) << path << " was allowed";
    EXPECT_EQ(r.status().code(), code) << r.status().ToString();
    EXPECT_NE(r.status().ToString().find(code == ErrorCode::kPermissionDenied ? "HTTP 403" : "HTTP 400"),
              std::string::npos)
        << r.status().ToString();
    EXPECT_NE(r.status().ToString().find(words), std::string::npos) << r.status().ToString();
  };
  refused(outside_, "not beneath an allowed backing root");
  refused(dir_ / "snapsX/mem", "not beneath an allowed backing root");  // a prefix is not a root
  refused(dir_ / "snaps/../other/mem", "leads outside the allowed root");
  // "//" is only spelling: this names a (missing) file beneath the root, not
  // the absolute path after the slashes.
  refused(dir_ / "snaps//" + outside_.substr(1), "No such file", ErrorCode::kInvalidArgument);
  std::filesystem::create_symlink(outside_, dir_ / "snaps/escape");
  refused(dir_ / "snaps/escape", "leads outside the allowed root");
  std::filesystem::create_symlink("/proc/self/root" + outside_, dir_ / "snaps/magic");
  refused(dir_ / "snaps/magic", "leads outside the allowed root");
  refused(dir_ / "snaps/missing", "No such file", ErrorCode::kInvalidArgument);
  EXPECT_EQ(pager_->client().ListSessions()->size(), 1u) << "a refused create left a session";

  // A symlink that stays beneath the root, and the second root, are fine.
  std::filesystem::create_symlink("mem", dir_ / "snaps/alias");
  ASSERT_TRUE(Create({.session_id = "alias", .backing_memory_path = dir_ / "snaps/alias"}).ok());
  std::filesystem::copy_file(snap_, dir_ / "more/mem");
  ExpectGoodClientServed("second-root", {.backing_memory_path = dir_ / "more/mem"});

  TouchAllPages((*vm)->memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap_));
}

// True if `uid` may execute `path` (every directory on the way searchable),
// asked from a child that becomes that user.
bool ExecutableBy(uid_t uid, gid_t gid, const std::string& path) {
  pid_t child = ::fork();
  if (child == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setresgid(gid, gid, gid) != 0 || ::setresuid(uid, uid, uid) != 0) _exit(1);
    _exit(::access(path.c_str(), X_OK) == 0 ? 0 : 1);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

TEST_F(PagerSecurityTest, RefusalsForLackOfPermissionAnswer403) {
  // A pager running as nobody, as an unprivileged deployment would: the
  // kernel refuses it a file it may not read, and a socket it may not give
  // away (chown). Both are refusals, 403, not pager faults (500).
  if (!ExecutableBy(kNobody, kNobody, UFFD_PAGER_BIN)) GTEST_SKIP() << "nobody may not run " << UFFD_PAGER_BIN;
  if (!ExecutableBy(0, 0, "/usr/bin/setpriv")) GTEST_SKIP() << "no /usr/bin/setpriv";
  std::string wrapper = dir_ / "pager-as-nobody";
  {
    std::ofstream out(wrapper);
    out << "#!/bin/sh\nexec /usr/bin/setpriv --reuid=" << kNobody << " --regid=" << kNobody << " --clear-groups "
        << UFFD_PAGER_BIN << " \"$@\"\n";
  }
  ASSERT_EQ(::chmod(wrapper.c_str(), 0755), 0);
  std::string data = dir_ / "nobody-data";
  std::filesystem::create_directories(data);
  ASSERT_EQ(::chown(data.c_str(), kNobody, kNobody), 0);
  std::string unreadable = dir_ / "snaps/private-mem";
  std::filesystem::copy_file(snap_, unreadable);
  ASSERT_EQ(::chmod(unreadable.c_str(), 0600), 0);
  ASSERT_EQ(::chmod(snap_.c_str(), 0644), 0);

  PagerLaunchOptions launch;
  launch.binary = wrapper;
  launch.data_dir = data;
  launch.version_key = "nobody";
  launch.cache_max_bytes = 64 * kMiB;
  launch.log_path = dir_ / "pager-nobody.log";
  launch.extra_args = {"--log-level", "debug"};
  auto pager = PagerProcess::Launch(launch);
  if (!pager.ok()) {
    auto log = ReadFileBytes(launch.log_path);
    FAIL() << pager.status().ToString() << "\n" << std::string(log.begin(), log.end());
  }
  const PagerClient& client = (*pager)->client();

  auto expect_403 = [&](CreateSessionRequest req, const std::string& words) {
    if (req.backing_memory_path.empty()) req.backing_memory_path = snap_;
    req.instance_id = "vm-" + req.session_id;
    auto r = client.CreateSession(req);
    ASSERT_FALSE(r.ok()) << req.session_id << " was allowed";
    EXPECT_EQ(r.status().code(), ErrorCode::kPermissionDenied) << r.status().ToString();
    EXPECT_NE(r.status().ToString().find("HTTP 403"), std::string::npos) << r.status().ToString();
    EXPECT_NE(r.status().ToString().find(words), std::string::npos) << r.status().ToString();
  };
  expect_403({.session_id = "unreadable", .backing_memory_path = unreadable}, "Permission denied");
  expect_403({.session_id = "give-away", .socket_uid = 1234}, "chown");
  // A raw answer says 403 too.
  HttpClient http(client.control_socket_path());
  auto raw = http.Send("POST", "/sessions", R"({"instance_id":"raw","backing_memory_path":")" + unreadable + R"("})");
  ASSERT_TRUE(raw.ok()) << raw.status().ToString();
  EXPECT_EQ(raw->status, 403) << raw->body;

  // What it may read, it serves.
  CreateSessionRequest good;
  good.session_id = "readable";
  good.instance_id = "vm-readable";
  good.backing_memory_path = snap_;
  auto created = client.CreateSession(good);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  auto vm = VmmStandIn::Restore(created->uffd_socket_path, kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  TouchAllPages((*vm)->memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap_));
}

TEST_F(PagerSecurityTest, AMissingAllowedRootStopsThePagerFromStarting) {
  PagerProcessOptions options;
  options.extra_args = {"--allowed-backing-root", dir_ / "does-not-exist"};
  auto p = TestPager::Start(dir_.path(), options);
  ASSERT_FALSE(p.ok());
  auto bytes = ReadFileBytes(dir_ / "pager-test.log");
  std::string log(bytes.begin(), bytes.end());
  EXPECT_NE(log.find("allowed-backing-root " + (dir_ / "does-not-exist")), std::string::npos) << log;
}

}  // namespace
}  // namespace uffdpager::testing::security_test
