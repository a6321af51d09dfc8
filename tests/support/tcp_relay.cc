#include "support/tcp_relay.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <deque>
#include <list>
#include <string>
#include <vector>

namespace uffdpager::testing {

namespace {

using Clock = std::chrono::steady_clock;

sockaddr_in Loopback(uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

// Bytes read from one side, due to be written to the other at `due`.
struct Segment {
  Clock::time_point due;
  std::string bytes;
  size_t sent = 0;
};

// One direction of a relayed connection.
struct Pipe {
  std::deque<Segment> queue;
  bool eof = false;  // the reading side closed: shut the writing side once the queue is empty
  bool shut = false;
};

struct Connection {
  UniqueFd client;
  UniqueFd upstream;
  Pipe to_upstream;
  Pipe to_client;
  bool dead = false;
};

// Closes with RST rather than FIN: what a crashed peer looks like.
void Abort(int fd) {
  linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

}  // namespace

TcpRelay::TcpRelay(UniqueFd listener, uint16_t port, uint16_t target_port, std::chrono::microseconds delay)
    : listener_(std::move(listener)), port_(port), target_port_(target_port), delay_(delay) {}

Result<UniqueFd> TcpRelay::Listen(uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return Status::FromErrno(errno, "relay socket");
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr = Loopback(port);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Status::FromErrno(errno, "relay bind to port " + std::to_string(port));
  }
  if (::listen(fd.get(), 128) != 0) return Status::FromErrno(errno, "relay listen");
  return fd;
}

Result<std::unique_ptr<TcpRelay>> TcpRelay::Start(uint16_t target_port, std::chrono::microseconds delay) {
  auto fd = Listen(0);
  if (!fd.ok()) return fd.status();
  sockaddr_in addr{};
  socklen_t len = sizeof(addr);
  ::getsockname(fd->get(), reinterpret_cast<sockaddr*>(&addr), &len);
  std::unique_ptr<TcpRelay> relay(new TcpRelay(std::move(*fd), ntohs(addr.sin_port), target_port, delay));
  relay->wake_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!relay->wake_) return Status::FromErrno(errno, "relay eventfd");
  relay->thread_ = std::thread([r = relay.get()] { r->Run(); });
  return relay;
}

TcpRelay::~TcpRelay() {
  stop_ = true;
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
}

void TcpRelay::Cut() {
  cut_ = true;
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof(one));
  // Returns once the loop has closed everything: callers rely on it.
  while (!cut_done_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

Status TcpRelay::Mend() {
  if (!cut_done_) return Status::InvalidArgument("relay: Mend without a Cut");
  mend_done_ = false;
  mend_ = true;
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof(one));
  while (!mend_done_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return mend_status_;
}

void TcpRelay::Run() {
  std::list<Connection> connections;
  char buf[64 * 1024];
  while (!stop_) {
    if (mend_ && cut_done_) {
      auto fd = Listen(port_);
      mend_status_ = fd.ok() ? Status::Ok() : fd.status();
      if (fd.ok()) {
        listener_ = std::move(*fd);
        cut_ = false;
        cut_done_ = false;
      }
      mend_ = false;
      mend_done_ = true;
    }
    if (cut_ && listener_.valid()) {
      for (Connection& c : connections) {
        Abort(c.client.get());
        Abort(c.upstream.get());
      }
      connections.clear();
      listener_.reset();
      cut_done_ = true;
    }
    std::vector<pollfd> fds;
    fds.push_back({wake_.get(), POLLIN, 0});
    if (listener_.valid()) fds.push_back({listener_.get(), POLLIN, 0});
    size_t first_conn = fds.size();
    Clock::time_point now = Clock::now();
    Clock::time_point next_due = now + std::chrono::seconds(1);
    for (Connection& c : connections) {
      auto events = [&](Pipe& in, Pipe& out) {
        short e = in.eof ? 0 : POLLIN;
        if (!out.queue.empty()) {
          if (out.queue.front().due <= now) {
            e |= POLLOUT;
          } else {
            next_due = std::min(next_due, out.queue.front().due);
          }
        }
        return e;
      };
      // client: read what goes upstream, write what comes back.
      fds.push_back({c.client.get(), events(c.to_upstream, c.to_client), 0});
      fds.push_back({c.upstream.get(), events(c.to_client, c.to_upstream), 0});
    }
    int timeout = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(next_due - now).count() + 1);
    if (::poll(fds.data(), fds.size(), std::max(timeout, 0)) < 0 && errno != EINTR) break;
    if (fds[0].revents & POLLIN) {
      uint64_t v;
      (void)!::read(wake_.get(), &v, sizeof(v));
    }
    if (listener_.valid() && first_conn == 2 && (fds[1].revents & POLLIN)) {
      for (;;) {
        UniqueFd client(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (!client) break;
        UniqueFd upstream(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_in target = Loopback(target_port_);
        if (!upstream || ::connect(upstream.get(), reinterpret_cast<sockaddr*>(&target), sizeof(target)) != 0) {
          Abort(client.get());
          continue;  // the client sees a reset, as if the target refused it
        }
        ::fcntl(upstream.get(), F_SETFL, O_NONBLOCK);
        int one = 1;
        ::setsockopt(client.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        ::setsockopt(upstream.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        ++accepted_;
        connections.push_back(Connection{std::move(client), std::move(upstream), {}, {}, false});
      }
    }
    now = Clock::now();
    size_t i = first_conn;
    for (Connection& c : connections) {
      if (i + 1 >= fds.size()) break;  // accepted this round: polled next round
      pollfd& pc = fds[i++];
      pollfd& pu = fds[i++];
      auto pump = [&](pollfd& from_fd, int from, int to, Pipe& pipe) {
        if (from_fd.revents & (POLLIN | POLLHUP | POLLERR)) {
          ssize_t n = ::read(from, buf, sizeof(buf));
          if (n > 0) {
            pipe.queue.push_back(Segment{now + delay_, std::string(buf, static_cast<size_t>(n)), 0});
          } else if (n == 0) {
            pipe.eof = true;
          } else if (errno != EAGAIN && errno != EINTR) {
            c.dead = true;
          }
        }
        while (!pipe.queue.empty() && pipe.queue.front().due <= now) {
          Segment& s = pipe.queue.front();
          ssize_t n = ::send(to, s.bytes.data() + s.sent, s.bytes.size() - s.sent, MSG_NOSIGNAL);
          if (n < 0) {
            if (errno != EAGAIN && errno != EINTR) c.dead = true;
            break;
          }
          s.sent += static_cast<size_t>(n);
          if (s.sent < s.bytes.size()) break;
          pipe.queue.pop_front();
        }
        if (pipe.eof && pipe.queue.empty() && !pipe.shut) {
          ::shutdown(to, SHUT_WR);
          pipe.shut = true;
        }
      };
      pump(pc, c.client.get(), c.upstream.get(), c.to_upstream);
      pump(pu, c.upstream.get(), c.client.get(), c.to_client);
      if (c.to_upstream.shut && c.to_client.shut) c.dead = true;
    }
    connections.remove_if([](const Connection& c) { return c.dead; });
  }
}

}  // namespace uffdpager::testing
