// HttpServer's bounds on slow clients, over a real Unix socket: a request
// must arrive whole within the deadline however steadily it trickles; a
// request being handled is never cut; at the connection limit a new
// connection takes the place of the one that waited longest, and is refused
// with a clear 503 only when every connection has a request being handled.
#include "common/http_server.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/http_client.h"
#include "common/mutex.h"
#include "common/unix_socket.h"
#include "common/wait_for.h"
#include "support/temp_dir.h"

namespace uffdpager {
namespace http_server_test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A handler that holds every request until released.
class Gate {
 public:
  void Open() {
    MutexLock lock(&mu_);
    open_ = true;
    cv_.SignalAll();
  }
  void Pass() {
    MutexLock lock(&mu_);
    ++waiting_;
    while (!open_) cv_.Wait();
  }
  int waiting() {
    MutexLock lock(&mu_);
    return waiting_;
  }

 private:
  Mutex mu_;
  CondVar cv_{&mu_};
  bool open_ = false;
  int waiting_ = 0;
};

class HttpServerTest : public ::testing::Test {
 protected:
  void Start(HttpServerOptions options, HttpHandler handler) {
    auto server = HttpServer::Start(dir_ / "http.sock", std::move(options), std::move(handler));
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(*server);
  }
  UniqueFd Connect() {
    auto c = ConnectUnixSocket(dir_ / "http.sock");
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? std::move(*c) : UniqueFd();
  }
  HttpClient Client() { return HttpClient(dir_ / "http.sock"); }

  testing::TempDir dir_;
  std::unique_ptr<HttpServer> server_;
};

// Everything the server sends until it closes the connection (bounded).
std::string ReadUntilClosed(int fd, std::chrono::milliseconds limit = 20s) {
  std::string out;
  const auto end = Clock::now() + limit;
  while (Clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buf[4096];
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
  ADD_FAILURE() << "the server did not close the connection within " << limit.count() << " ms; got: " << out;
  return out;
}

bool IsClosedByServer(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1;  // readable: an answer and/or the end of the stream
}

TEST_F(HttpServerTest, ATricklingRequestIsAnswered408AndClosedAtItsDeadline) {
  std::atomic<int> handled{0};
  HttpServerOptions options;
  options.request_deadline_seconds = 1;
  options.idle_timeout_seconds = 5;  // every byte resets it: it never fires here
  Start(options, [&](const HttpRequest&) {
    ++handled;
    return HttpResponse{200, "{}"};
  });
  // The server starts the deadline when it accepts, which may be before
  // Connect() returns: start the clock before connecting so `took` never
  // undercounts it.
  const auto start = Clock::now();
  UniqueFd conn = Connect();
  const std::string request = "GET /slow HTTP/1.1\r\nHost: x\r\nX-Padding: " + std::string(200, 'a');
  std::string answer;
  // One byte every 50 ms, never finishing the headers, until the server
  // answers and closes.
  for (size_t i = 0; Clock::now() - start < 20s; ++i) {
    pollfd p{conn.get(), POLLIN, 0};
    // Readable, or no longer writable: the server has answered and closed.
    if (::poll(&p, 1, 50) == 1 || ::send(conn.get(), &request[i % request.size()], 1, MSG_NOSIGNAL) != 1) {
      answer = ReadUntilClosed(conn.get());
      break;
    }
  }
  const auto took = Clock::now() - start;
  EXPECT_EQ(answer.rfind("HTTP/1.1 408", 0), 0u) << answer;
  EXPECT_NE(answer.find("no whole request arrived within 1 s"), std::string::npos) << answer;
  EXPECT_GE(took, 1s);
  EXPECT_LT(took, 5s) << "closed by the idle timeout, not the deadline";
  EXPECT_EQ(handled.load(), 0);
}

TEST_F(HttpServerTest, ARequestBeingHandledIsNotCutByTheDeadline) {
  Gate gate;
  HttpServerOptions options;
  options.request_deadline_seconds = 1;
  Start(options, [&](const HttpRequest&) {
    gate.Pass();
    return HttpResponse{200, "{\"done\":true}"};
  });
  auto answer = std::async(std::launch::async, [&] { return Client().Send("POST", "/long", "", 30s); });
  ASSERT_TRUE(WaitFor([&] { return gate.waiting() == 1; }, 10s));
  // Handling outlasts the deadline (and the watchdog's checks) by far.
  std::this_thread::sleep_for(2500ms);
  gate.Open();
  auto r = answer.get();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "{\"done\":true}");
}

TEST_F(HttpServerTest, AtTheLimitANewConnectionReplacesTheOneThatWaitedLongest) {
  HttpServerOptions options;
  options.max_connections = 4;
  options.idle_timeout_seconds = 120;  // only the limit may close the silent ones
  Start(options, [](const HttpRequest& r) { return HttpResponse{200, "{\"path\":\"" + r.path + "\"}"}; });
  std::vector<UniqueFd> silent;
  for (int i = 0; i < 4; ++i) silent.push_back(Connect());
  // A normal client is answered; the oldest silent connection made room.
  auto r = Client().Send("GET", "/health", "", 10s);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200);
  std::string evicted = ReadUntilClosed(silent[0].get());
  EXPECT_EQ(evicted.rfind("HTTP/1.1 503", 0), 0u) << evicted;
  EXPECT_NE(evicted.find("limit of 4 connections"), std::string::npos) << evicted;
  for (int i = 1; i < 4; ++i) EXPECT_FALSE(IsClosedByServer(silent[i].get())) << "connection " << i;
}

TEST_F(HttpServerTest, WhenEveryConnectionIsHandlingANewOneIsRefusedAndNeverHandled) {
  Gate gate;
  std::atomic<int> handled{0};
  HttpServerOptions options;
  options.max_connections = 2;
  Start(options, [&](const HttpRequest& r) {
    ++handled;
    if (r.path == "/hold") gate.Pass();
    return HttpResponse{200, "{}"};
  });
  auto a = std::async(std::launch::async, [&] { return Client().Send("POST", "/hold", "", 30s); });
  auto b = std::async(std::launch::async, [&] { return Client().Send("POST", "/hold", "", 30s); });
  ASSERT_TRUE(WaitFor([&] { return gate.waiting() == 2; }, 10s));
  UniqueFd third = Connect();
  const std::string request = "POST /third HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
  (void)!::send(third.get(), request.data(), request.size(), MSG_NOSIGNAL);
  std::string refused = ReadUntilClosed(third.get());
  EXPECT_EQ(refused.rfind("HTTP/1.1 503", 0), 0u) << refused;
  EXPECT_NE(refused.find("handling 2 requests"), std::string::npos) << refused;
  gate.Open();
  ASSERT_TRUE(a.get().ok());
  ASSERT_TRUE(b.get().ok());
  EXPECT_EQ(handled.load(), 2) << "the refused request was handled";
  // Once the others are answered there is room again: as soon as the server
  // has let go of their connections, which may come a moment after their
  // answers reached the clients.
  int status = 0;
  EXPECT_TRUE(WaitFor(
      [&] {
        auto r = Client().Send("GET", "/after", "", 10s);
        status = r.ok() ? r->status : -1;
        return status == 200;
      },
      10s))
      << "last status " << status;
  EXPECT_EQ(handled.load(), 3) << "exactly the two held requests and the one after them were handled";
}

TEST_F(HttpServerTest, ThePathReachesTheHandlerAsSent) {
  Start({}, [](const HttpRequest& r) { return HttpResponse{200, r.path, "text/plain"}; });
  UniqueFd conn = Connect();
  const std::string request =
      "GET /sessions/..%2Fdrain%3F/close?x=%2F HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  ASSERT_EQ(::send(conn.get(), request.data(), request.size(), MSG_NOSIGNAL), static_cast<ssize_t>(request.size()));
  std::string answer = ReadUntilClosed(conn.get());
  EXPECT_NE(answer.find("\r\n\r\n/sessions/..%2Fdrain%3F/close"), std::string::npos) << answer;
}

}  // namespace
}  // namespace http_server_test
}  // namespace uffdpager
