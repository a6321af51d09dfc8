// VmmAcceptor: waits on a session's socket for its VMM and takes the VMM's
// UFFD handshake (docs/control-api.md, "The handshake").
//
// Up to kMaxPending connections are read at once, each with its own
// handshake deadline, and the first valid handshake is taken: clients that
// connect and say nothing never delay the VMM behind them. What a connection
// hands over decides what becomes of it:
//   - a process that is not the expected peer: closed unread, counted as a
//     refused peer; waiting goes on (an intruder cannot fail the session);
//   - no userfaultfd (silence until the deadline, closed without a byte,
//     bytes without an fd, an fd that is not a userfaultfd): closed, counted
//     as a refused handshake; waiting goes on, since no VM depends on it;
//   - a userfaultfd with anything wrong around it (several fds, a payload
//     that does not parse), or fds the kernel could not hand to this process
//     (EMFILE): the handshake is refused and the caller fails the session,
//     because that VM would otherwise hang;
//   - a valid handshake: the VMM, handed to the caller.
// Once the caller has its VMM (or failed the session), TurnAwayTheRest closes
// every other connection, pending or still queued on the listener: one VM
// per session.
//
// Runs on the session's thread; not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/process_handle.h"
#include "common/process_identity.h"
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
  // The peer as pid and start time, when it could be read and is certainly
  // the process that connected (start_time 0: unknown).
  ProcessIdentity identity;
  UniqueFd uffd;
  // The features the VMM negotiated on the uffd (UFFDIO_API), from
  // /proc/self/fdinfo; nullopt if they could not be read.
  std::optional<uint64_t> uffd_features;
  std::vector<GuestRegionMapping> regions;  // structurally valid; not yet checked against the memory
};

struct VmmAcceptorOptions {
  HandshakeLimits limits;
  std::chrono::milliseconds handshake_timeout{10000};
  ExpectedPeer expected_peer;
};

// How a wait for the VMM is to end before a VMM came.
enum class AcceptorStop {
  kNone,
  kNow,           // the session closes: give up at once, connections being read and all
  kAfterPending,  // a hand-over: take no new connection (the listener goes to the taker);
                  // finish reading the ones taken already, so their VMM is served by someone
  kAfterBacklog,  // a drain: the socket file is gone; finish the connections taken and
                  // those still queued on the listener, then give up
};

struct VmmAcceptorHooks {
  // Polled whenever a wake fd turns readable.
  std::function<AcceptorStop()> stop;
  std::function<void()> on_refused_peer;
  std::function<void()> on_refused_handshake;
};

class VmmAcceptor {
 public:
  // Connections read at once; more wait on the listener.
  static constexpr size_t kMaxPending = 16;

  // `cancel_fd` and `settle_fd` (eventfds) wake a wait; hooks.stop() then
  // says how to end it. Only `cancel_fd` interrupts reading.
  VmmAcceptor(std::string session_id, int listener, int cancel_fd, int settle_fd, VmmAcceptorOptions options,
              VmmAcceptorHooks hooks);
  ~VmmAcceptor();

  VmmAcceptor(const VmmAcceptor&) = delete;
  VmmAcceptor& operator=(const VmmAcceptor&) = delete;

  // Waits for the VMM. OK with *vmm filled; kUnavailable (with vmm->peer
  // unset) if stopped; any other error says why a handshake carrying a
  // userfaultfd was refused, with vmm->peer, client and identity set to who
  // sent it (its VMM may have to be killed).
  Status Accept(AcceptedVmm* vmm);

  // After Accept returned a VMM or a refusal: closes every other connection,
  // those being read and those still queued on the listener, and counts each
  // as a refused handshake, with `why` in the log.
  void TurnAwayTheRest(const std::string& why);

 private:
  struct Pending {
    UniqueFd conn;
    PeerCredentials peer{};
    uint64_t accepted_at_ticks = 0;  // BootTicksNow() at accept: no later process is the peer
    HandshakeReceiver receiver;
    std::chrono::steady_clock::time_point deadline;  // first bytes by then, or it is dropped
    std::chrono::steady_clock::time_point quiet_by;  // bytes arrived: the rest by then
  };
  enum class Verdict { kWaitMore, kTurnAway, kRefuse, kTake };

  // Accepts one queued connection into pending_ (peer check first).
  void AcceptOne();
  // Reads what `p` sent so far and judges it if it is whole or out of time.
  Verdict Judge(Pending& p, std::chrono::steady_clock::time_point now, Status* why);
  // Fills *vmm from `p`, whose handshake carried a userfaultfd; the error
  // says why it was refused.
  Status Take(Pending& p, AcceptedVmm* vmm);
  void TurnAway(const Pending& p, const std::string& why);
  // False (logged, counted) if `conn`'s peer is not the one expected.
  bool CheckExpectedPeer(int conn, PeerCredentials* peer);
  bool ListenerReady() const;

  const std::string session_id_;
  const int listener_;
  const int cancel_fd_;
  const int settle_fd_;
  const VmmAcceptorOptions options_;
  const VmmAcceptorHooks hooks_;
  std::vector<Pending> pending_;
};

}  // namespace uffdpager
