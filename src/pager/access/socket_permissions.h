// SocketPermissions: who may connect to the pager's sockets.
//
// connect(2) on a Unix socket needs write permission on the socket file, so
// the file's owner, group and mode are the access control. By default a
// socket belongs to the pager's own user with mode 0600. A jailed VMM runs as
// another user: giving the socket to that user (owner) or to a group shared
// with it (group, mode 0660) lets that VMM in and nobody else.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "uffdpager/status.h"

namespace uffdpager {

struct SocketOwnership {
  std::optional<uid_t> uid;  // unset: the pager's own user
  std::optional<gid_t> gid;  // set: the group may connect too (mode 0660)

  // `other`'s fields where set, ours elsewhere (a session's own over the pager's).
  SocketOwnership OverriddenBy(const SocketOwnership& other) const;
  bool is_default() const { return !uid && !gid; }
  mode_t mode() const { return gid ? 0660 : 0600; }
};

// Gives the socket file at `path` (already bound, mode 0600) its owner, group
// and mode. Done before the socket's path is handed to anyone.
Status ApplySocketOwnership(const std::string& path, const SocketOwnership& ownership);

// A user or group given by name or number ("firecracker", "1001").
Result<uid_t> ResolveUser(const std::string& name_or_id);
Result<gid_t> ResolveGroup(const std::string& name_or_id);

// Makes each directory searchable but not listable by others (0711), so a
// VMM of another user can reach a socket whose name it was given, while the
// socket's own permissions decide whether it may connect.
Status MakeSearchable(const std::vector<std::string>& dirs);

}  // namespace uffdpager
