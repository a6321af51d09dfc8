// PeerCheck: whether the process that connected to a session socket is the
// VMM the orchestrator said would come (SO_PEERCRED uid, and pid if given).
// Socket permissions already keep other users out; this also keeps out a
// different process of the same user (another VM's VMM, say), which could
// otherwise hand in its own memory and be served this snapshot's bytes.
#pragma once

#include <sys/types.h>

#include <optional>

#include "common/unix_socket.h"
#include "uffdpager/status.h"

namespace uffdpager {

struct ExpectedPeer {
  std::optional<uid_t> uid;
  std::optional<pid_t> pid;

  bool any() const { return !uid && !pid; }
};

// OK if `peer` is what `expected` asks for (anything, when it asks nothing);
// otherwise kConflict saying which credential did not match.
Status CheckPeer(const PeerCredentials& peer, const ExpectedPeer& expected);

}  // namespace uffdpager
