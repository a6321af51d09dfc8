#include "pager/access/peer_check.h"

#include <fmt/format.h>

namespace uffdpager {

Status CheckPeer(const PeerCredentials& peer, const ExpectedPeer& expected) {
  if (expected.uid && peer.uid != *expected.uid) {
    return Status::Conflict(
        fmt::format("peer pid {} runs as uid {}, not the expected uid {}", peer.pid, peer.uid, *expected.uid));
  }
  if (expected.pid && peer.pid != *expected.pid) {
    return Status::Conflict(
        fmt::format("peer is pid {} (uid {}), not the expected pid {}", peer.pid, peer.uid, *expected.pid));
  }
  return Status::Ok();
}

}  // namespace uffdpager
