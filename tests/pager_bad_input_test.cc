// Bad input on every door of the pager: each gets a clear answer, and a good
// client keeps being served byte-exact throughout.
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <set>

#include "common/http_client.h"
#include "common/unix_socket.h"
#include "support/pager_fixture.h"
#include "support/raw_handshake.h"

namespace uffdpager::testing::bad_input_test {
namespace {

constexpr uint64_t kMiB = 1ULL << 20;
const std::vector<uint64_t> kRegions = {8 * kMiB, 4 * kMiB};

class PagerBadInputTest : public PagerFixture {
 protected:
  void SetUp() override {
    PagerFixture::SetUp();
    if (IsSkipped()) return;
    PagerProcessOptions options;
    options.handshake_timeout_ms = 300;
    options.extra_args = {"--http-idle-timeout-seconds", "1"};
    StartPager(options);
    snap_ = MakeSnapshot("mem", 12 * kMiB, 21);
    auto vm = VmmStandIn::Restore(CreateSession("good", snap_), kRegions);
    ASSERT_TRUE(vm.ok()) << vm.status().ToString();
    good_ = std::move(*vm);
    ASSERT_TRUE(WaitFor([&] { return SessionState("good") == "serving"; }));
    file_ = ReadFileBytes(snap_);
    baseline_uffds_ = pager_->CountUserfaultfds();
    ASSERT_EQ(baseline_uffds_, 1u);
  }

  // Faults in the next 64 pages of the good client and checks them.
  void ExpectGoodClientStillServed() {
    for (int i = 0; i < 64; ++i, ++next_page_) {
      uint64_t off = (next_page_ * 4096) % (12 * kMiB);
      ASSERT_EQ(0, std::memcmp(good_->memory.AtFileOffset(off), &file_[off], 4096)) << "page at " << off;
    }
    EXPECT_EQ(SessionState("good"), "serving");
  }

  // Sends `payload` with `fds` to a fresh session and returns its state.
  nlohmann::json SendRawHandshake(const std::string& id, const std::string& payload, std::vector<int> fds,
                                  const std::string& backing = "") {
    std::string sock = CreateSession(id, backing.empty() ? snap_ : backing);
    return ::uffdpager::testing::SendRawHandshake(*pager_, id, sock, payload, fds);
  }

  std::string ValidPayloadFor(const GuestMemory& m) {
    return SerializeHandshake(m.Mappings(), HandshakeDialect::kV1_12);
  }

  std::string snap_;
  std::vector<uint8_t> file_;
  std::unique_ptr<VmmStandIn> good_;
  uint64_t next_page_ = 0;
  size_t baseline_uffds_ = 0;
};

void ExpectFailedWith(const nlohmann::json& session, const std::string& words) {
  EXPECT_EQ(session.value("state", ""), "failed") << session.dump();
  EXPECT_NE(session.value("reason", "").find(words), std::string::npos) << session.dump();
}

TEST_F(PagerBadInputTest, MalformedHandshakeJsonIsRefusedAndItsFdClosed) {
  SpareUffd spare = SpareUffd::Make();
  auto s = SendRawHandshake("bad-json", "[{\"base_host_virt_addr\": 4096, \"size\":", {spare.uffd.fd()});
  ExpectFailedWith(s, "not valid JSON");
  EXPECT_TRUE(WaitFor([&] { return pager_->CountUserfaultfds() == baseline_uffds_; })) << "the refused uffd leaked";
  // A VM handed its memory over and will not be served: the socket goes, so
  // nothing else mistakes the session for one still waiting.
  EXPECT_TRUE(WaitFor([&] { return ::access(s.value("uffd_socket_path", "").c_str(), F_OK) != 0; }));
  ExpectGoodClientStillServed();
}

TEST_F(PagerBadInputTest, ConnectionsThatHandOverNoUserfaultfdNeverFailAWaitingSession) {
  std::string sock = CreateSession("no-uffd", snap_);
  SpareUffd spare = SpareUffd::Make();
  auto refused = [&] { return Session("no-uffd").value("refused_handshakes", uint64_t{0}); };
  // Connects and closes without a byte.
  ASSERT_TRUE(ConnectUnixSocket(sock).ok());
  ASSERT_TRUE(WaitFor([&] { return refused() == 1; })) << Session("no-uffd").dump();
  // A whole handshake, without its fd.
  auto send_and_close = [&](const std::string& payload, std::vector<int> fds) {
    auto conn = ConnectUnixSocket(sock);
    ASSERT_TRUE(conn.ok()) << conn.status().ToString();
    ASSERT_TRUE(SendWithFds(conn->get(), payload, fds).ok());
  };
  send_and_close(ValidPayloadFor(spare.memory), {});
  ASSERT_TRUE(WaitFor([&] { return refused() == 2; })) << Session("no-uffd").dump();
  // Garbage, without an fd.
  send_and_close("[garbage", {});
  ASSERT_TRUE(WaitFor([&] { return refused() == 3; })) << Session("no-uffd").dump();
  // A handshake whose fd is not a userfaultfd.
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  send_and_close(ValidPayloadFor(spare.memory), {p[0]});
  ::close(p[0]);
  ::close(p[1]);
  ASSERT_TRUE(WaitFor([&] { return refused() == 4; })) << Session("no-uffd").dump();

  // None of them failed the session: it still waits, its socket in place.
  EXPECT_EQ(SessionState("no-uffd"), "waiting");
  EXPECT_EQ(::access(sock.c_str(), F_OK), 0);
  EXPECT_EQ(Stat("refused_handshakes"), 4u);
  EXPECT_EQ(Stat("failed_sessions"), 0u);
  HttpClient http(ControlSocket());
  auto metrics = http.Send("GET", "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(metrics->body.find("\nuffdpager_refused_handshakes_total 4\n"), std::string::npos) << metrics->body;
  EXPECT_NE(pager_->Log().find("without a userfaultfd"), std::string::npos) << pager_->Log();
  // The real VMM comes and is served.
  auto vm = VmmStandIn::Restore(sock, kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  TouchAllPages((*vm)->memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap_));
  EXPECT_EQ(SessionState("no-uffd"), "serving");
  ExpectGoodClientStillServed();
}

// The free fd numbers below `limit` in process `pid`.
std::vector<int> FreeFdNumbers(pid_t pid, int limit) {
  std::set<int> used;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    used.insert(std::stoi(e.path().filename().string()));
  }
  std::vector<int> free;
  for (int fd = 0; fd < limit; ++fd) {
    if (used.count(fd) == 0) free.push_back(fd);
  }
  return free;
}

TEST_F(PagerBadInputTest, AUserfaultfdLostToTheFdLimitFailsTheSessionNamingIt) {
  std::string sock = CreateSession("emfile", snap_);
  SpareUffd spare = SpareUffd::Make();
  rlimit before{};
  ASSERT_EQ(::prlimit(pager_->pid(), RLIMIT_NOFILE, nullptr, &before), 0);
  // The pager's last HTTP connection closes a moment after its answer: wait
  // until its fds stop changing, then let it open exactly one more fd (the
  // VMM's connection) and not the userfaultfd that comes with it.
  std::vector<int> free, last;
  ASSERT_TRUE(WaitFor(
      [&] {
        free = FreeFdNumbers(pager_->pid(), 4096);
        bool settled = free == last;
        last = free;
        return settled;
      },
      std::chrono::seconds(10), std::chrono::milliseconds(200)));
  ASSERT_GE(free.size(), 2u);
  rlimit tight{static_cast<rlim_t>(free[1]), before.rlim_max};
  ASSERT_EQ(::prlimit(pager_->pid(), RLIMIT_NOFILE, &tight, nullptr), 0);
  auto conn = ConnectUnixSocket(sock);
  ASSERT_TRUE(conn.ok()) << conn.status().ToString();
  int fds[] = {spare.uffd.fd()};
  ASSERT_TRUE(SendWithFds(conn->get(), ValidPayloadFor(spare.memory), fds).ok());
  // (The control API needs fds too: read the verdict from the log first.)
  bool logged = WaitFor([&] { return pager_->Log().find("EMFILE") != std::string::npos; });
  ASSERT_EQ(::prlimit(pager_->pid(), RLIMIT_NOFILE, &before, nullptr), 0);
  ASSERT_TRUE(logged) << pager_->Log();
  auto s = Session("emfile");
  ExpectFailedWith(s, "EMFILE");
  EXPECT_NE(s.value("reason", "").find(std::to_string(free[1])), std::string::npos) << s.dump();
  ExpectGoodClientStillServed();
}

TEST_F(PagerBadInputTest, HandshakeWithTwoFdsIsRefusedAndBothClosed) {
  SpareUffd a = SpareUffd::Make(), b = SpareUffd::Make();
  ExpectFailedWith(SendRawHandshake("two-fds", ValidPayloadFor(a.memory), {a.uffd.fd(), b.uffd.fd()}), "got 2");
  EXPECT_TRUE(WaitFor([&] { return pager_->CountUserfaultfds() == baseline_uffds_; })) << "refused uffds leaked";
  ExpectGoodClientStillServed();
}

TEST_F(PagerBadInputTest, RegionPastTheEndOfTheFileIsRefused) {
  SpareUffd spare = SpareUffd::Make();
  auto m = spare.memory.Mappings();
  m[1].offset = 12 * kMiB;  // the second region would read beyond the 12 MiB file
  ExpectFailedWith(SendRawHandshake("past-end", SerializeHandshake(m, HandshakeDialect::kV1_12), {spare.uffd.fd()}),
                   "past the end");
  ExpectGoodClientStillServed();
}

TEST_F(PagerBadInputTest, ATruncatedMemoryFileIsRefusedAtHandshake) {
  std::string small = MakeSnapshot("truncated.mem", 3 * kMiB, 22);
  SpareUffd spare = SpareUffd::Make();
  ExpectFailedWith(SendRawHandshake("truncated", ValidPayloadFor(spare.memory), {spare.uffd.fd()}, small),
                   "past the end");
  ExpectGoodClientStillServed();
}

TEST_F(PagerBadInputTest, PageSizeThreeIsRefused) {
  SpareUffd spare = SpareUffd::Make();
  std::string payload = "[{\"base_host_virt_addr\":" + std::to_string(spare.memory.Mappings()[0].base_host_virt_addr) +
                        ",\"size\":8388608,\"offset\":0,\"page_size\":3,\"page_size_kib\":3}]";
  ExpectFailedWith(SendRawHandshake("ps3", payload, {spare.uffd.fd()}), "power of two");
  ExpectGoodClientStillServed();
}

TEST_F(PagerBadInputTest, TooManyRegionsAndOversizedMessagesAreRefused) {
  SpareUffd spare = SpareUffd::Make();
  std::vector<GuestRegionMapping> many;
  for (uint64_t i = 0; i < 65; ++i) many.push_back({(i + 1) << 32, 4096, i * 4096, 4096});
  ExpectFailedWith(SendRawHandshake("many", SerializeHandshake(many, HandshakeDialect::kV1_12), {spare.uffd.fd()}),
                   "more than 64");
  SpareUffd spare2 = SpareUffd::Make();
  ExpectFailedWith(SendRawHandshake("huge-msg", std::string(100 * 1024, ' '), {spare2.uffd.fd()}), "exceeds");
  ExpectGoodClientStillServed();
}

TEST_F(PagerBadInputTest, ASilentClientIsDroppedAndTheSessionStillWorks) {
  std::string sock = CreateSession("silent", snap_);
  auto conn = ConnectUnixSocket(sock);
  ASSERT_TRUE(conn.ok());
  // The pager closes the silent connection after its handshake timeout (300 ms).
  char c;
  struct timeval tv {
    10, 0
  };
  ::setsockopt(conn->get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  EXPECT_EQ(::recv(conn->get(), &c, 1, 0), 0) << "the pager did not close a silent client";
  EXPECT_EQ(SessionState("silent"), "waiting");
  ExpectGoodClientStillServed();
  // The real VMM arrives later and is served.
  auto vm = VmmStandIn::Restore(sock, kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  TouchAllPages((*vm)->memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap_));
}

TEST_F(PagerBadInputTest, ControlApiRefusesBadRequestsClearly) {
  HttpClient http(ControlSocket());
  auto post = [&](const std::string& body) {
    auto r = http.Send("POST", "/sessions", body);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : HttpResponse{};
  };
  auto r = post(R"({"session_id":"../escape","instance_id":"i","backing_memory_path":")" + snap_ + "\"}");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("invalid"), std::string::npos) << r.body;
  r = post(R"({"instance_id":"../x","backing_memory_path":")" + snap_ + "\"}");
  EXPECT_EQ(r.status, 400) << "instance id used as session id must be checked too";
  r = post("{not json");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("not valid JSON"), std::string::npos) << r.body;
  r = post(R"({"backing_memory_path":"/x"})");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("instance_id"), std::string::npos) << r.body;
  r = post(R"({"instance_id":5,"backing_memory_path":"/x"})");
  EXPECT_EQ(r.status, 400);
  r = post(R"({"instance_id":"m","backing_memory_path":")" + dir_.path() + "/missing.mem\"}");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("No such file"), std::string::npos) << r.body;
  r = post(std::string(10 * kMiB, 'x'));
  EXPECT_EQ(r.status, 413);
  EXPECT_NE(r.body.find("exceeds"), std::string::npos) << r.body;
  auto nf = http.Send("GET", "/nope");
  ASSERT_TRUE(nf.ok());
  EXPECT_EQ(nf->status, 404);
  auto bad_method = http.Send("DELETE", "/health");
  ASSERT_TRUE(bad_method.ok());
  EXPECT_EQ(bad_method->status, 405);
  // None of that left a file outside the sessions directory.
  EXPECT_NE(::access((pager_->root_dir() + "/escape.sock").c_str(), F_OK), 0);
  ExpectGoodClientStillServed();
}

TEST_F(PagerBadInputTest, ASilentHttpClientIsDisconnectedAndOthersAreServed) {
  auto conn = ConnectUnixSocket(ControlSocket());
  ASSERT_TRUE(conn.ok());
  auto half = ConnectUnixSocket(ControlSocket());
  ASSERT_TRUE(half.ok());
  std::string partial = "POST /sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"instance";
  ASSERT_EQ(::send(half->get(), partial.data(), partial.size(), MSG_NOSIGNAL), ssize_t(partial.size()));
  // While they sit there, the API answers others at once.
  auto h = pager_->client().Health();
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ExpectGoodClientStillServed();
  // Both are cut off after the idle timeout (1 s here).
  char buf[512];
  struct timeval tv {
    10, 0
  };
  for (int fd : {conn->get(), half->get()}) {
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    auto start = std::chrono::steady_clock::now();
    ssize_t n;
    while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) {
    }
    EXPECT_EQ(n, 0) << "connection was not closed by the pager";
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  }
  EXPECT_EQ(pager_->client().ListSessions()->size(), 1u) << "a half-sent request created something";
}

}  // namespace
}  // namespace uffdpager::testing::bad_input_test
