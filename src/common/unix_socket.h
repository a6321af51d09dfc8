// Unix stream sockets: listening, connecting, and asking who the peer is.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <string>

#include "common/unique_fd.h"
#include "uffdpager/status.h"

namespace uffdpager {

// Binds and listens on `path` with permission bits `mode`. A stale socket file
// left at `path` is replaced; any other kind of file there is an error.
// `type` is SOCK_STREAM (what Firecracker speaks) or SOCK_SEQPACKET.
Result<UniqueFd> ListenUnixSocket(const std::string& path, mode_t mode, int backlog = 64, int type = SOCK_STREAM);

// Blocking connect to a SOCK_STREAM socket, as Firecracker does.
Result<UniqueFd> ConnectUnixSocket(const std::string& path, int type = SOCK_STREAM);

struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

// SO_PEERCRED of a connected Unix socket.
Result<PeerCredentials> GetPeerCredentials(int fd);

// Removes `path` only if it is a socket; a missing file is fine.
Status RemoveSocketFile(const std::string& path);

}  // namespace uffdpager
