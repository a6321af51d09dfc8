// SessionRecord: everything a pager needs to take over a live session from
// another process: the spec it was created with, where its socket is, and,
// once a VMM handed its memory over, the regions and the ranges the VMM has
// discarded since. The fds (listener, userfaultfd, connection, the VMM's
// pidfd) travel beside it: through systemd's fd store across a crash, or over
// a Unix socket to a newer pager in an upgrade.
//
// A record is JSON on purpose: it is read back by a different process, maybe
// of a different version, so unknown fields are ignored and a missing one is
// an error naming it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/uffd_handshake.h"
#include "common/unique_fd.h"
#include "pager/access/peer_check.h"
#include "pager/access/socket_permissions.h"
#include "uffdpager/status.h"

namespace uffdpager {

// What POST /sessions asked for.
struct SessionSpec {
  std::string id;
  std::string instance_id;
  std::string backing_path;
  std::string cache_key;
  bool kill_client_on_failure = false;
  // Who may connect (over the pager-wide --socket-owner/--socket-group).
  SocketOwnership socket_ownership;
  // Which process must be on the other end; anyone else is turned away.
  ExpectedPeer expected_peer;
};

enum class SessionPhase {
  kWaiting,  // listening for the VMM; the listener is the fd that matters
  kServing,  // the VMM's memory is registered; the userfaultfd is
};

struct SessionRecord {
  SessionSpec spec;
  std::string socket_path;
  // Tells this incarnation of a session id from an earlier one that was
  // replaced: fd-store names carry it, so a late removal of the old
  // session's fds can never drop the new one's.
  uint64_t incarnation = 0;
  SessionPhase phase = SessionPhase::kWaiting;
  // The backing file the bytes came from (FileIdentity::ToString). A taker
  // that finds another file at the path must not serve it: the VM would read
  // someone else's bytes.
  std::string backing_identity;
  // kServing only.
  std::vector<GuestRegionMapping> regions;
  std::vector<std::pair<uint64_t, uint64_t>> removed;  // [start, end) host addresses
  pid_t client_pid = 0;

  nlohmann::json ToJson() const;
  static Result<SessionRecord> FromJson(const nlohmann::json& j);
};

// A fresh incarnation number: increasing within a process and, being based
// on the wall clock, across restarts.
uint64_t NextSessionIncarnation();

// The fds that go with a record. Which are set depends on the phase.
struct SessionFds {
  UniqueFd listener;    // kWaiting
  UniqueFd uffd;        // kServing
  UniqueFd connection;  // kServing: the VMM's handshake connection, kept open as the VMM expects
  UniqueFd client;      // kServing: pidfd of the VMM, when it could be opened
};

// The role of each fd, as named in the fd store and in hand-over messages.
enum class SessionFdRole { kListener, kUffd, kConnection, kClient };
inline constexpr SessionFdRole kAllSessionFdRoles[] = {SessionFdRole::kListener, SessionFdRole::kUffd,
                                                        SessionFdRole::kConnection, SessionFdRole::kClient};
const char* SessionFdRoleName(SessionFdRole role);

// A session as another pager process hands it on: found after a restart, or
// received in a hand-over.
struct RecoveredSession {
  SessionRecord record;
  SessionFds fds;
};
UniqueFd& FdForRole(SessionFds& fds, SessionFdRole role);

}  // namespace uffdpager
