// SystemdFdStore: systemd's file-descriptor store, where a service parks fds
// that must outlive a crash of the process (FDSTORE=1 with FDNAME=; the unit
// needs FileDescriptorStoreMax=). When systemd restarts the service it passes
// them back at fd 3 and up, named in LISTEN_FDNAMES. Outside systemd (no
// NOTIFY_SOCKET) the store is disabled and every call does nothing.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "common/unique_fd.h"
#include "uffdpager/status.h"

namespace uffdpager {

class SystemdFdStore {
 public:
  // Enabled when NOTIFY_SOCKET is set.
  SystemdFdStore();
  bool enabled() const { return enabled_; }

  // Parks `fd` (a duplicate, ours stays open) under `name`: printable ASCII
  // without ':', at most 255 characters. FDPOLL=0: systemd must not drop a
  // userfaultfd or a socket because it polls readable or hung up; the pager
  // removes what it no longer needs itself.
  Status Add(const std::string& name, int fd);
  // Drops every fd stored under `name`.
  Status Remove(const std::string& name);

  // The fds systemd passed to this process at start (LISTEN_FDS for our
  // pid), with their names, marked close-on-exec. Clears the LISTEN_*
  // variables so no child inherits them. Call once, early.
  static std::vector<std::pair<std::string, UniqueFd>> TakePassedFds();

 private:
  Status Send(const std::string& state, const int* fds, unsigned n_fds);
  bool enabled_ = false;
};

}  // namespace uffdpager
