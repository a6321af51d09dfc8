#include "pager/serving/vmm_acceptor.h"

#include <poll.h>
#include <sys/socket.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/userfaultfd.h"

namespace uffdpager {

VmmAcceptor::VmmAcceptor(std::string session_id, int listener, std::vector<int> stop_fds, VmmAcceptorOptions options,
                         std::function<bool()> stopping, std::function<void()> on_refused_peer)
    : session_id_(std::move(session_id)),
      listener_(listener),
      stop_fds_(std::move(stop_fds)),
      options_(options),
      stopping_(std::move(stopping)),
      on_refused_peer_(std::move(on_refused_peer)) {}

Status VmmAcceptor::Accept(AcceptedVmm* vmm) {
  std::vector<pollfd> pfds;
  pfds.push_back({listener_, POLLIN, 0});
  for (int fd : stop_fds_) pfds.push_back({fd, POLLIN, 0});
  for (;;) {
    if (::poll(pfds.data(), pfds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "poll session socket");
    }
    if (stopping_()) return Status::Unavailable("session stopped");
    if (!(pfds[0].revents & POLLIN)) continue;
    UniqueFd conn(::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn) {
      if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) continue;
      return Status::FromErrno(errno, "accept on the session socket");
    }
    PeerCredentials peer{};
    if (!CheckExpectedPeer(conn.get(), &peer)) continue;
    // Only the first stop fd cancels a handshake being read: a hand-over
    // (the others) lets it finish, so its VMM is served by someone.
    auto received = ReceiveHandshake(conn.get(), options_.limits.max_message_bytes, options_.handshake_timeout,
                                     stop_fds_.empty() ? -1 : stop_fds_.front());
    if (!received.ok()) {
      if (stopping_()) return Status::Unavailable("session stopped");
      if (received.status().code() == ErrorCode::kTimeout) {
        // Something connected and said nothing: not a VMM mid-handshake (a
        // VMM sends at once). Drop it and keep waiting for the real one.
        spdlog::warn("session {}: pid {} connected but sent no handshake within {} ms; connection closed", session_id_,
                     peer.pid, options_.handshake_timeout.count());
        continue;
      }
      return received.status();
    }
    vmm->peer = peer;
    if (peer.pid > 0) {
      if (auto handle = ProcessHandle::Open(peer.pid); handle.ok()) vmm->client = std::move(*handle);
    }
    return TakeHandshake(std::move(conn), std::move(*received), vmm);
  }
}

bool VmmAcceptor::CheckExpectedPeer(int conn, PeerCredentials* peer) {
  auto creds = GetPeerCredentials(conn);
  Status verdict = creds.ok() ? CheckPeer(*creds, options_.expected_peer) : creds.status();
  if (creds.ok()) *peer = *creds;
  if (verdict.ok() || (!creds.ok() && options_.expected_peer.any())) return true;
  // Not the VMM this session waits for: turn it away without reading what it
  // sends, and keep waiting for the right one.
  on_refused_peer_();
  spdlog::warn("session {}: refused a connection: {}", session_id_, verdict.ToString());
  return false;
}

Status VmmAcceptor::TakeHandshake(UniqueFd connection, ReceivedHandshake handshake, AcceptedVmm* vmm) {
  if (handshake.control_truncated || handshake.fds.size() != 1) {
    return Status::Protocol(fmt::format("handshake must carry exactly one fd (the userfaultfd), got {}{}",
                                        handshake.fds.size(), handshake.control_truncated ? " and more" : ""));
  }
  if (!IsUserfaultfd(handshake.fds[0].get())) {
    return Status::Protocol("the fd sent with the handshake is not a userfaultfd");
  }
  auto regions = ParseHandshake(handshake.payload, options_.limits);
  if (!regions.ok()) return regions.status();
  vmm->connection = std::move(connection);
  vmm->uffd = std::move(handshake.fds[0]);
  vmm->regions = std::move(*regions);
  return Status::Ok();
}

}  // namespace uffdpager
