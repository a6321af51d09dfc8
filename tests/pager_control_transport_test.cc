// The control socket against hostile clients, on a real pager: session ids
// that look like paths reach the pager as one segment and never another
// endpoint (through PagerClient, pagerctl and raw requests); connections
// that trickle a byte at a time never lock out a normal client; and a serve
// loop that fails the same way on every turn does not flood the log.
#include <poll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include "common/child_process.h"
#include "common/mutex.h"
#include "common/unix_socket.h"
#include "support/pager_fixture.h"
#include "support/raw_http_request.h"

#ifndef PAGERCTL_BIN
#error "PAGERCTL_BIN must name the pagerctl binary"
#endif

namespace uffdpager::testing::control_transport_test {
namespace {

using namespace std::chrono_literals;
constexpr uint64_t kMiB = 1ULL << 20;

class PagerControlTransportTest : public PagerFixture {
 protected:
  void SetUp() override {
    PagerFixture::SetUp();
    if (IsSkipped()) return;
    StartPager();
    snap_ = MakeSnapshot("mem", 4 * kMiB, 7);
  }

  bool Draining() {
    auto h = pager_->client().Health();
    EXPECT_TRUE(h.ok()) << h.status().ToString();
    return !h.ok() || h->draining;
  }

  // One request written by hand (no client library to normalize the path);
  // the status and body of the answer.
  std::pair<int, std::string> RawRequest(const std::string& method, const std::string& path) {
    return RawHttpRequest(ControlSocket(), method, path);
  }

  std::string snap_;
};

TEST_F(PagerControlTransportTest, PathLikeIdsThroughTheClientNeverReachAnotherEndpoint) {
  CreateSession("good", snap_);
  for (const std::string& id : std::vector<std::string>{"../drain?", "../drain", "../../drain", "a/b", "good/close",
                                                        "x?y", "100%", "good%2Fclose", "good\n", "#frag"}) {
    Status closed = pager_->client().CloseSession(id);
    EXPECT_EQ(closed.code(), ErrorCode::kNotFound) << id << ": " << closed.ToString();
    EXPECT_NE(closed.message().find("not a valid session id"), std::string::npos) << id << ": " << closed.ToString();
    EXPECT_EQ(pager_->client().CompleteSession(id).code(), ErrorCode::kNotFound) << id;
    auto got = pager_->client().GetSession(id);
    EXPECT_FALSE(got.ok()) << id << ": " << got->dump();
    if (!got.ok()) {
      EXPECT_EQ(got.status().code(), ErrorCode::kNotFound) << id << ": " << got.status().ToString();
    }
  }
  // What no escaping keeps one segment is refused before any request.
  for (const char* id : {"", ".", ".."}) {
    EXPECT_EQ(pager_->client().CloseSession(id).code(), ErrorCode::kInvalidArgument) << '"' << id << '"';
    EXPECT_EQ(pager_->client().GetSession(id).status().code(), ErrorCode::kInvalidArgument) << '"' << id << '"';
  }
  EXPECT_FALSE(Draining()) << "a session id drained the pager";
  EXPECT_EQ(SessionState("good"), "waiting");
  // The same client still closes a real session.
  ASSERT_TRUE(pager_->client().CloseSession("good").ok());
  EXPECT_FALSE(pager_->client().GetSession("good").ok());
}

TEST_F(PagerControlTransportTest, PagerctlCloseOfAPathLikeIdDoesNotDrain) {
  CreateSession("good", snap_);
  std::string log = dir_ / "pagerctl.log";
  auto p = ChildProcess::Spawn({PAGERCTL_BIN, "--socket", ControlSocket(), "close", "../drain?"}, log);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  int status = 0;
  ASSERT_TRUE(p->WaitForExit(30s, &status));
  std::ifstream in(log);
  std::string out((std::istreambuf_iterator<char>(in)), {});
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << out;
  EXPECT_NE(out.find("HTTP 404"), std::string::npos) << out;
  EXPECT_NE(out.find("no session \"../drain?\""), std::string::npos) << out;
  EXPECT_FALSE(Draining()) << "pagerctl close '../drain?' drained the pager";
  EXPECT_EQ(SessionState("good"), "waiting");
}

TEST_F(PagerControlTransportTest, EscapedSeparatorsInARawPathStayInTheirSegment) {
  CreateSession("good", snap_);
  // "good%2Fclose" is one segment: POST on a session is not an endpoint. A
  // pager that decoded first would have closed "good".
  auto [status, body] = RawRequest("POST", "/sessions/good%2Fclose");
  EXPECT_EQ(status, 405) << body;
  EXPECT_EQ(SessionState("good"), "waiting");
  std::tie(status, body) = RawRequest("POST", "/sessions/..%2Fdrain%3F/close");
  EXPECT_EQ(status, 404) << body;
  EXPECT_NE(body.find("no session \\\"../drain?\\\": not a valid session id"), std::string::npos) << body;
  std::tie(status, body) = RawRequest("POST", "/sessions/good%00/close");
  EXPECT_EQ(status, 404) << body;
  std::tie(status, body) = RawRequest("POST", "/sessions/%2E%2E/close");
  EXPECT_EQ(status, 404) << body;
  std::tie(status, body) = RawRequest("POST", "/drain%3F");
  EXPECT_EQ(status, 404) << body;
  std::tie(status, body) = RawRequest("GET", "/sessions/good%zz");
  EXPECT_EQ(status, 400) << body;
  EXPECT_NE(body.find("two hex digits"), std::string::npos) << body;
  EXPECT_FALSE(Draining());
  EXPECT_EQ(SessionState("good"), "waiting");
  // An escaped id that is a real one is that session.
  std::tie(status, body) = RawRequest("GET", "/sessions/%67ood");
  EXPECT_EQ(status, 200) << body;
}

// Connections that each send a byte now and then and never finish a request.
class Tricklers {
 public:
  Tricklers(const std::string& socket_path, size_t count) {
    const std::string start = "GET /health HTTP/1.1\r\nHost: pager\r\nX-Trickle: ";
    for (size_t i = 0; i < count; ++i) {
      auto conn = ConnectUnixSocket(socket_path);
      if (!conn.ok()) {
        ADD_FAILURE() << "connection " << i << ": " << conn.status().ToString();
        break;
      }
      (void)!::send(conn->get(), start.data(), 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      conns_.push_back(std::move(*conn));
    }
    received_.resize(conns_.size());
    closed_.assign(conns_.size(), false);
    thread_ = std::thread([this, start] {
      for (size_t round = 1; !stop_.load(); ++round) {
        Round(start[round % start.size()]);
        std::this_thread::sleep_for(100ms);  // the trickle's pace, not a wait for anything
      }
    });
  }
  ~Tricklers() {
    stop_.store(true);
    thread_.join();
  }

  size_t count() const { return conns_.size(); }
  // Connections the server has answered and closed, and what it said.
  std::vector<std::string> Closed() {
    MutexLock lock(&mu_);
    std::vector<std::string> out;
    for (size_t i = 0; i < conns_.size(); ++i) {
      if (closed_[i]) out.push_back(received_[i]);
    }
    return out;
  }

 private:
  // Reads what the server sent; sends each open connection one more byte.
  void Round(char byte) {
    std::vector<pollfd> fds(conns_.size());
    for (size_t i = 0; i < conns_.size(); ++i) fds[i] = {conns_[i].get(), POLLIN, 0};
    (void)::poll(fds.data(), fds.size(), 0);
    MutexLock lock(&mu_);
    for (size_t i = 0; i < conns_.size(); ++i) {
      if (closed_[i]) continue;
      if (fds[i].revents != 0) {
        char buf[4096];
        ssize_t n;
        while ((n = ::recv(conns_[i].get(), buf, sizeof(buf), MSG_DONTWAIT)) > 0) received_[i].append(buf, n);
        if (n == 0 || (n < 0 && errno != EAGAIN)) closed_[i] = true;
        continue;
      }
      (void)!::send(conns_[i].get(), &byte, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
  }

  std::vector<UniqueFd> conns_;
  Mutex mu_;
  std::vector<std::string> received_ GUARDED_BY(mu_);
  std::vector<bool> closed_ GUARDED_BY(mu_);
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

size_t ThreadCount(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("Threads:", 0) == 0) return std::stoul(line.substr(8));
  }
  return 0;
}

TEST_F(PagerControlTransportTest, TricklingConnectionsDoNotLockOutANormalClient) {
  constexpr size_t kTricklers = 1100;
  constexpr size_t kLimit = 512;  // the control server's connection limit
  rlimit files{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &files), 0);
  if (files.rlim_cur < kTricklers + 100) {
    files.rlim_cur = std::min<rlim_t>(files.rlim_max, kTricklers + 200);
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &files), 0);
  }
  CreateSession("normal", snap_);
  const size_t baseline_threads = ThreadCount(pager_->pid());
  {
    Tricklers tricklers(ControlSocket(), kTricklers);
    ASSERT_EQ(tricklers.count(), kTricklers);
    // A normal client is answered while they trickle.
    auto health = pager_->client().Health(10s);
    ASSERT_TRUE(health.ok()) << health.status().ToString();
    EXPECT_EQ(SessionState("normal"), "waiting");
    ASSERT_TRUE(pager_->client().ListSessions().ok());
    // The pager serves at most its limit; the rest were answered and closed:
    // to make room (503), or, on a machine slow enough, at their deadline
    // (408).
    EXPECT_TRUE(WaitFor([&] { return tricklers.Closed().size() >= kTricklers - kLimit; }, 30s))
        << tricklers.Closed().size() << " of " << kTricklers << " closed";
    for (const std::string& said : tricklers.Closed()) {
      bool made_room = said.rfind("HTTP/1.1 503", 0) == 0 && said.find("limit of 512 connections") != std::string::npos;
      ASSERT_TRUE(made_room || said.rfind("HTTP/1.1 408", 0) == 0) << said;
    }
    EXPECT_TRUE(WaitFor([&] { return ThreadCount(pager_->pid()) <= baseline_threads + kLimit; }, 30s))
        << ThreadCount(pager_->pid()) << " threads, " << baseline_threads << " before";
  }
  // Once they are gone, so are their threads.
  EXPECT_TRUE(WaitFor([&] { return ThreadCount(pager_->pid()) <= baseline_threads; }, 30s))
      << ThreadCount(pager_->pid()) << " threads, " << baseline_threads << " before";
  ASSERT_TRUE(pager_->client().Health().ok());
}

// Lines of the pager's log that contain `words`.
std::vector<std::string> LogLines(const TestPager& pager, const std::string& words) {
  std::vector<std::string> out;
  std::istringstream in(pager.Log());
  for (std::string line; std::getline(in, line);) {
    if (line.find(words) != std::string::npos) out.push_back(line);
  }
  return out;
}

TEST_F(PagerControlTransportTest, ACheckpointThatCannotBeWrittenDoesNotFloodTheLog) {
  auto vm = VmmStandIn::Restore(CreateSession("flood", snap_), {4 * kMiB});
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  ASSERT_TRUE(WaitFor([&] { return SessionState("flood") == "serving"; }));
  // The session's checkpoint follows every batch of removes; make every
  // write of it fail, as a full disk would.
  const std::string live = pager_->root_dir() + "/live";
  std::filesystem::rename(live, live + ".away");
  std::ofstream(live) << "not a directory";
  const std::string failure = "save the record of session flood";

  constexpr int kRemoves = 3000;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kRemoves; ++i) {
    ASSERT_EQ(::madvise((*vm)->memory.AtFileOffset((i % 1024) * 4096ULL), 4096, MADV_DONTNEED), 0);
  }
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - start);
  // Each madvise returned once the pager had read its remove event; its
  // checkpoint may still be failing, so wait for the last line to settle.
  std::this_thread::sleep_for(1100ms);
  ASSERT_EQ(::madvise((*vm)->memory.AtFileOffset(0), 4096, MADV_DONTNEED), 0);
  ASSERT_TRUE(WaitFor([&] {
    auto lines = LogLines(*pager_, failure);
    return !lines.empty() && lines.back().find("similar lines suppressed") != std::string::npos;
  })) << "no line counted the suppressed ones:\n"
      << pager_->Log().substr(0, 4000);
  auto lines = LogLines(*pager_, failure);
  EXPECT_LE(lines.size(), static_cast<size_t>(seconds.count()) + 3)
      << kRemoves << " failures in " << seconds.count() << " s";
  const std::regex counted(R"(\((\d+) similar lines suppressed since the previous one\))");
  uint64_t suppressed = 0;
  for (const auto& line : lines) {
    std::smatch m;
    if (std::regex_search(line, m, counted)) suppressed += std::stoull(m[1].str());
  }
  EXPECT_GT(suppressed, 0u);
  EXPECT_LE(lines.size() + suppressed, static_cast<size_t>(kRemoves) + 1);
  EXPECT_EQ(SessionState("flood"), "serving");
  std::filesystem::remove(live);
  std::filesystem::rename(live + ".away", live);
}

}  // namespace
}  // namespace uffdpager::testing::control_transport_test
