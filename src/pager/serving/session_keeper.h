// SessionKeeper: where a session keeps what a successor needs — another
// pager process that serves it on after this one crashed or handed it over.
// The session calls it at each point where losing the process would
// otherwise lose the VM: before POST /sessions answers (waiting: the
// listener), before the first fault is served (serving: the userfaultfd, the
// connection, the VMM's pidfd), and after each batch of remove events. When
// the session no longer holds a VM it forgets everything.
//
// continuity/recovery_store.h implements it with checkpoint files and
// systemd's fd store. Implementations must be thread-safe: every session
// calls from its own thread.
#pragma once

#include <initializer_list>
#include <utility>

#include "pager/serving/session_checkpoint.h"
#include "uffdpager/status.h"

namespace uffdpager {

class SessionKeeper {
 public:
  // An fd to park, by role (the keeper keeps its own duplicate).
  using ParkedFd = std::pair<SessionFdRole, int>;

  virtual ~SessionKeeper() = default;
  // Writes `checkpoint` down (replacing this incarnation's earlier one) and
  // parks `fds`; roles not named keep what was parked for them before.
  virtual Status Keep(const SessionCheckpoint& checkpoint, std::initializer_list<ParkedFd> fds) = 0;
  // Drops the fd parked as `role` (the listener, once a VMM is served).
  virtual void Release(const SessionCheckpoint& checkpoint, SessionFdRole role) = 0;
  // The session is over: its checkpoint and every fd it parked go.
  virtual void Forget(const SessionCheckpoint& checkpoint) = 0;
};

}  // namespace uffdpager
