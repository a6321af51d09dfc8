// SessionSpec: what POST /sessions asked for, fixed for the session's life.
#pragma once

#include <string>

#include "pager/access/peer_check.h"
#include "pager/access/socket_permissions.h"

namespace uffdpager {

struct SessionSpec {
  std::string id;
  std::string instance_id;
  std::string backing_path;
  // The caller's name for the snapshot (default: the backing path); with the
  // identity of the bytes it becomes the session's CacheKey.
  std::string cache_key;
  bool kill_client_on_failure = false;
  // Who may connect (over the pager-wide --socket-owner/--socket-group).
  SocketOwnership socket_ownership;
  // Which process must be on the other end; anyone else is turned away.
  ExpectedPeer expected_peer;
};

}  // namespace uffdpager
