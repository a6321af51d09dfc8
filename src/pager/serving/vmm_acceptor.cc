#include "pager/serving/vmm_acceptor.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/userfaultfd.h"

namespace uffdpager {

using Clock = std::chrono::steady_clock;

namespace {

// After the first bytes, a split message's rest arrives at once; waiting a
// little longer only tells "more is coming" from "that was all".
constexpr auto kContinuationWait = std::chrono::milliseconds(200);
// How long the listener rests after accept failed for lack of fds, so a
// pager at its fd limit does not spin on a listener that stays readable.
constexpr auto kAcceptBackoff = std::chrono::milliseconds(100);

// The features a VMM negotiated on its userfaultfd (UFFDIO_API), from the
// "API:" line of /proc/self/fdinfo/FD: "API:\t<api>:<features>:<ioctls>",
// each in hex.
std::optional<uint64_t> NegotiatedFeatures(int uffd) {
  std::ifstream in("/proc/self/fdinfo/" + std::to_string(uffd));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("API:", 0) != 0) continue;
    size_t first = line.find(':', 4);
    if (first == std::string::npos) return std::nullopt;
    std::string hex = line.substr(first + 1, line.find(':', first + 1) - first - 1);
    char* end = nullptr;
    uint64_t features = std::strtoull(hex.c_str(), &end, 16);
    if (hex.empty() || end != hex.c_str() + hex.size()) return std::nullopt;
    return features;
  }
  return std::nullopt;
}

int MillisecondsUntil(Clock::time_point when, Clock::time_point now) {
  if (when <= now) return 0;
  return static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(when - now).count());
}

std::string Plural(size_t n, const char* one, const char* many) { return fmt::format("{} {}", n, n == 1 ? one : many); }

}  // namespace

VmmAcceptor::VmmAcceptor(std::string session_id, int listener, int cancel_fd, int settle_fd, VmmAcceptorOptions options,
                         VmmAcceptorHooks hooks)
    : session_id_(std::move(session_id)),
      listener_(listener),
      cancel_fd_(cancel_fd),
      settle_fd_(settle_fd),
      options_(options),
      hooks_(std::move(hooks)) {}

VmmAcceptor::~VmmAcceptor() = default;

Status VmmAcceptor::Accept(AcceptedVmm* vmm) {
  Clock::time_point listener_rests_until{};
  for (;;) {
    const AcceptorStop stop = hooks_.stop();
    if (stop == AcceptorStop::kNow) return Status::Unavailable("session stopped");
    const bool take_new = stop == AcceptorStop::kNone || stop == AcceptorStop::kAfterBacklog;
    if (stop != AcceptorStop::kNone && pending_.empty() && !(take_new && ListenerReady())) {
      return Status::Unavailable("session stopped waiting");
    }
    Clock::time_point now = Clock::now();
    const bool listen = take_new && pending_.size() < kMaxPending && now >= listener_rests_until;
    // [cancel, settle, listener, pending...]; fd -1 is not polled.
    std::vector<pollfd> pfds = {{cancel_fd_, POLLIN, 0},
                                {stop == AcceptorStop::kNone ? settle_fd_ : -1, POLLIN, 0},
                                {listen ? listener_ : -1, POLLIN, 0}};
    int timeout = -1;
    auto sooner = [&](int ms) { timeout = timeout < 0 ? ms : std::min(timeout, ms); };
    if (take_new && now < listener_rests_until) sooner(MillisecondsUntil(listener_rests_until, now));
    for (const Pending& p : pending_) {
      pfds.push_back({p.conn.get(), POLLIN, 0});
      sooner(MillisecondsUntil(p.receiver.started() ? std::min(p.quiet_by, p.deadline) : p.deadline, now));
    }
    if (::poll(pfds.data(), pfds.size(), timeout) < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "poll session socket");
    }
    if ((pfds[0].revents & POLLIN) && hooks_.stop() == AcceptorStop::kNone) {
      uint64_t ignored;  // a wake-up meant for serving; nothing to do here
      (void)!::read(cancel_fd_, &ignored, sizeof(ignored));
    }
    now = Clock::now();
    const size_t polled = pending_.size();
    for (size_t i = 0; i < polled && i < pending_.size();) {
      Status why;
      Verdict verdict = Judge(pending_[i], now, &why);
      if (verdict == Verdict::kWaitMore) {
        ++i;
        continue;
      }
      Pending p = std::move(pending_[i]);
      pending_.erase(pending_.begin() + static_cast<ptrdiff_t>(i));
      if (verdict == Verdict::kTurnAway) {
        TurnAway(p, why.message());
        continue;
      }
      return Take(p, vmm);
    }
    if (pfds[2].revents & POLLIN) {
      UniqueFd conn(::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC));
      if (!conn && (errno == EMFILE || errno == ENFILE)) {
        spdlog::warn("session {}: cannot accept a connection: {}; trying again in {} ms", session_id_,
                     Status::FromErrno(errno, "accept").ToString(), kAcceptBackoff.count());
        listener_rests_until = Clock::now() + kAcceptBackoff;
      } else if (!conn && errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) {
        return Status::FromErrno(errno, "accept on the session socket");
      } else if (conn) {
        PeerCredentials peer{};
        if (CheckExpectedPeer(conn.get(), &peer)) {
          const auto accepted = Clock::now();
          pending_.push_back(Pending{std::move(conn), peer, BootTicksNow(),
                                     HandshakeReceiver(options_.limits.max_message_bytes),
                                     accepted + options_.handshake_timeout, accepted});
        }
      }
    }
  }
}

VmmAcceptor::Verdict VmmAcceptor::Judge(Pending& p, Clock::time_point now, Status* why) {
  const ReceivedHandshake& r = p.receiver.received();
  const size_t bytes_before = r.payload.size(), fds_before = r.fds.size();
  auto whole = p.receiver.ReadAvailable(p.conn.get());
  if (r.payload.size() != bytes_before || r.fds.size() != fds_before) p.quiet_by = now + kContinuationWait;
  const bool done = !whole.ok() || *whole || now >= p.deadline || (p.receiver.started() && now >= p.quiet_by);
  if (!done) return Verdict::kWaitMore;
  const bool carries_uffd =
      std::any_of(r.fds.begin(), r.fds.end(), [](const UniqueFd& fd) { return IsUserfaultfd(fd.get()); });
  // Fds sent that this process could not receive may have been a VM's
  // userfaultfd: that VM must not be left to hang unnoticed.
  const bool fds_lost = r.control_truncated && r.fds.empty();
  if (carries_uffd || fds_lost) return Verdict::kTake;
  // No userfaultfd: no VM depends on this connection.
  if (!p.receiver.started()) {
    *why = Status::Timeout(fmt::format("sent no handshake within {} ms", options_.handshake_timeout.count()));
  } else if (!whole.ok()) {
    *why = whole.status();
  } else if (r.payload.empty() && r.fds.empty()) {
    *why = Status::Protocol("closed the connection without sending a handshake");
  } else if (r.fds.empty()) {
    *why = Status::Protocol(fmt::format("sent {} without a userfaultfd", Plural(r.payload.size(), "byte", "bytes")));
  } else {
    *why = Status::Protocol(fmt::format("sent {}, none of them a userfaultfd", Plural(r.fds.size(), "fd", "fds")));
  }
  return Verdict::kTurnAway;
}

Status VmmAcceptor::Take(Pending& p, AcceptedVmm* vmm) {
  ReceivedHandshake r = p.receiver.Take();
  vmm->peer = p.peer;
  if (p.peer.pid > 0) {
    if (auto handle = ProcessHandle::Open(p.peer.pid); handle.ok()) {
      vmm->client = std::move(*handle);
    } else {
      spdlog::warn("session {}: {}; the VMM's exit will be seen through its connection or its identity", session_id_,
                   handle.status().ToString());
    }
    // A process started after the connection was accepted is not the peer:
    // the pid was reused.
    auto identity = IdentifyProcess(p.peer.pid);
    if (identity.ok() && identity->start_time <= p.accepted_at_ticks) vmm->identity = *identity;
  }
  UFFD_RETURN_IF_ERROR(CheckHandshakeFds(r));
  auto regions = ParseHandshake(r.payload, options_.limits);
  if (!regions.ok()) return regions.status();
  vmm->uffd_features = NegotiatedFeatures(r.fds[0].get());
  vmm->connection = std::move(p.conn);
  vmm->uffd = std::move(r.fds[0]);
  vmm->regions = std::move(*regions);
  return Status::Ok();
}

void VmmAcceptor::TurnAway(const Pending& p, const std::string& why) {
  hooks_.on_refused_handshake();
  spdlog::warn("session {}: turned away a connection from pid {}: {}", session_id_, p.peer.pid, why);
}

void VmmAcceptor::TurnAwayTheRest(const std::string& why) {
  for (const Pending& p : pending_) TurnAway(p, why);
  pending_.clear();
  while (ListenerReady()) {
    UniqueFd conn(::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn) break;
    PeerCredentials peer{};
    if (CheckExpectedPeer(conn.get(), &peer))
      TurnAway(Pending{std::move(conn), peer, 0, HandshakeReceiver(0), {}, {}}, why);
  }
}

bool VmmAcceptor::ListenerReady() const {
  pollfd p{listener_, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

bool VmmAcceptor::CheckExpectedPeer(int conn, PeerCredentials* peer) {
  auto creds = GetPeerCredentials(conn);
  Status verdict = creds.ok() ? CheckPeer(*creds, options_.expected_peer) : creds.status();
  if (creds.ok()) *peer = *creds;
  if (verdict.ok() || (!creds.ok() && options_.expected_peer.any())) return true;
  // Not the VMM this session waits for: turn it away without reading what it
  // sends, and keep waiting for the right one.
  hooks_.on_refused_peer();
  spdlog::warn("session {}: refused a connection: {}", session_id_, verdict.ToString());
  return false;
}

}  // namespace uffdpager
