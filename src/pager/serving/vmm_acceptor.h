// VmmAcceptor: waits on a session's socket for its VMM and takes the VMM's
// UFFD handshake (docs/control-api.md, "The handshake").
//
// A connection from a process that is not the expected peer is closed unread
// and counted, and waiting goes on: an intruder cannot fail someone else's
// session. A peer that connects and says nothing within the handshake
// timeout is dropped, and waiting goes on (a VMM sends at once). Anything
// else that is not a valid handshake — no fd or several, an fd that is not a
// userfaultfd, a payload that does not parse — refuses the handshake: every
// fd received is closed, and the caller fails the session.
//
// Runs on the session's thread; not thread-safe.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "common/process_handle.h"
#include "common/uffd_handshake.h"
#include "common/unique_fd.h"
#include "common/unix_socket.h"
#include "pager/access/peer_check.h"
#include "uffdpager/status.h"

namespace uffdpager {

// A VMM that connected and handed its memory over.
struct AcceptedVmm {
  UniqueFd connection;  // kept open for the VM's life, as Firecracker expects
  PeerCredentials peer{};
  ProcessHandle client;  // pidfd of the peer, when it could be opened
  UniqueFd uffd;
  std::vector<GuestRegionMapping> regions;  // structurally valid; not yet checked against the memory
};

struct VmmAcceptorOptions {
  HandshakeLimits limits;
  std::chrono::milliseconds handshake_timeout{10000};
  ExpectedPeer expected_peer;
};

class VmmAcceptor {
 public:
  // `stop_fds` (eventfds) wake a wait; `stopping()` then says whether to give up.
  // `on_refused_peer` is called for each connection turned away.
  VmmAcceptor(std::string session_id, int listener, std::vector<int> stop_fds, VmmAcceptorOptions options,
              std::function<bool()> stopping, std::function<void()> on_refused_peer);

  // Waits for the VMM. OK with *vmm filled; kUnavailable if stopped; any
  // other error says why the handshake was refused, with vmm->peer and
  // vmm->client set to who sent it (its VMM may have to be killed).
  Status Accept(AcceptedVmm* vmm);

 private:
  // False (logged, counted) if `conn`'s peer is not the one expected.
  bool CheckExpectedPeer(int conn, PeerCredentials* peer);
  // Checks what one connection sent and fills *vmm from it.
  Status TakeHandshake(UniqueFd connection, ReceivedHandshake handshake, AcceptedVmm* vmm);

  const std::string session_id_;
  const int listener_;
  const std::vector<int> stop_fds_;
  const VmmAcceptorOptions options_;
  const std::function<bool()> stopping_;
  const std::function<void()> on_refused_peer_;
};

}  // namespace uffdpager
